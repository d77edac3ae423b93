"""The server's garbage-collector tuning (app.tune_gc): on by default from the CLI's
environment, off with AGENTSTREAM_GC_THRESHOLD=0, never applied by in-process create_app."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from agentstream.app import tune_gc
from agentstream.settings import GC_THRESHOLD, Settings


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_the_cli_environment_tunes_and_zero_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTSTREAM_GC_THRESHOLD", raising=False)
    assert Settings.from_env().gc_threshold == GC_THRESHOLD > 700
    monkeypatch.setenv("AGENTSTREAM_GC_THRESHOLD", "0")
    assert Settings.from_env().gc_threshold == 0
    assert Settings().gc_threshold == 0


@pytest.mark.usefixtures("restore_gc")
def test_tuning_raises_the_young_threshold_and_freezes_what_startup_built() -> None:
    gc.unfreeze()
    _, second, third = gc.get_threshold()
    tune_gc(5_000)
    assert gc.get_threshold() == (5_000, second, third)
    assert gc.get_freeze_count() > 0


@pytest.mark.usefixtures("restore_gc")
def test_zero_leaves_pythons_defaults() -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    tune_gc(0)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
