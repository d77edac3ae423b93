"""The benchmark's turn-about ratio (benchmarks.run.paired): the ratio of the two medians the
targets judge by, and beside it each repetition over the baseline's just before and after it,
their range and their median."""

from __future__ import annotations

from benchmarks.run import _range, paired


def test_a_steady_ratio_reads_the_same_every_way() -> None:
    baseline = [100.0, 100.0, 100.0, 100.0]
    pair = paired([80.0, 80.0, 80.0], baseline)
    assert pair == {"ratio": 0.8, "low": 0.8, "high": 0.8, "median": 0.8, "pairs": 3}
    assert _range(pair) == "0.80x (0.80-0.80, 0.80)"


def test_the_pairs_median_follows_a_machine_that_changes_speed() -> None:
    # The machine runs at one speed, then at twice it, both sides alike: every repetition is
    # 0.8x of the baseline beside it. The medians land in different states (the client's
    # between the two, the baseline's in the fast one), so their ratio reads 0.7x.
    baseline = [100.0, 100.0, 200.0, 200.0, 200.0]
    client = [80.0, 120.0, 160.0, 160.0]  # the second between a slow and a fast repetition
    pair = paired(client, baseline)
    assert pair["ratio"] == 0.7
    assert pair["median"] == 0.8
    assert (pair["low"], pair["high"], pair["pairs"]) == (0.8, 0.8, 4)
    assert _range(pair) == "0.70x (0.80-0.80, 0.80)"


def test_a_failed_repetition_leaves_its_pair_out() -> None:
    baseline = [100.0, 100.0, 100.0, 100.0]
    pair = paired([50.0, None, 70.0], baseline)
    assert pair["pairs"] == 2
    assert (pair["low"], pair["median"], pair["high"]) == (0.5, 0.6, 0.7)
    assert paired([None, None], [100.0, 100.0, 100.0]) == {
        "ratio": None, "low": None, "high": None, "median": None, "pairs": 0,
    }  # fmt: skip
    assert _range(paired([None], [1.0, 1.0])) == "-"
