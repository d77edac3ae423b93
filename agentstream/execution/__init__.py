"""Running graphs: the executor, stream-mode translation, the worker and multitask handling."""
