"""A deterministic embedding for the store tests (no network, no model): one dimension per
word of a small vocabulary, counted, plus one for every other word."""

VOCABULARY = ("cats", "purr", "softly", "rockets", "fly", "high", "markets", "rise", "today")
DIMS = len(VOCABULARY) + 1


def embed(texts: list[str]) -> list[list[float]]:
    vectors = []
    for text in texts:
        vector = [0.0] * DIMS
        for word in text.lower().split():
            index = VOCABULARY.index(word) if word in VOCABULARY else DIMS - 1
            vector[index] += 1.0
        vectors.append(vector)
    return vectors
