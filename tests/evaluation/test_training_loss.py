"""Final training loss of a method against its single-task runs (under- or over-fitting)."""

from keras_mtl.evaluation.training_loss import (final_training_loss, training_loss_changes,
                                                training_loss_markdown)


def _row(kind, label, seed, curve, status="ok"):
    return {"kind": kind, "label": label, "seed": seed, "status": status, "loss_curve": curve}


ROWS = [
    _row("single", "a", 0, [[5, {"a": 1.0}], [10, {"a": 0.50}]]),
    _row("single", "b", 0, [[5, {"b": 2.0}], [10, {"b": 1.00}]]),
    _row("single", "a", 1, [[5, {"a": 1.0}], [10, {"a": 0.40}]]),
    _row("single", "b", 1, [[5, {"b": 2.0}], [10, {"b": 1.00}]]),
    _row("multi", "m", 0, [[5, {"a": 1.0, "b": 2.0}], [10, {"a": 0.60, "b": 0.90}]]),
    _row("multi", "m", 1, [[5, {"a": 1.0, "b": 2.0}], [10, {"a": 0.44, "b": 1.00}]]),
    _row("multi", "m", 2, [[10, {"a": 0.1, "b": 0.1}]]),  # no baselines for seed 2
    _row("multi", "broken", 0, None, status="failed"),
    {"kind": "multi", "label": "old", "seed": 0, "status": "ok"},  # a row from before curves
]


def test_final_loss_is_the_tasks_last_point():
    assert final_training_loss(ROWS[4], "a") == 0.60
    assert final_training_loss({"loss_curve": [[1, {"a": 3.0}], [2, {"b": 1.0}]]}, "a") == 3.0
    assert final_training_loss(ROWS[-1], "a") is None
    assert final_training_loss(ROWS[4], "c") is None


def test_changes_pair_each_seed_with_its_own_baseline():
    # By hand: a: 0.60 / 0.50 -> +20%, 0.44 / 0.40 -> +10%; b: 0.90 / 1 -> -10%, 1 / 1 -> 0%.
    changes = training_loss_changes(ROWS, "m", ["a", "b"])
    assert [(seed, round(change, 6)) for seed, _, _, change in changes["a"]] == [(0, 20.0),
                                                                                 (1, 10.0)]
    assert [(seed, round(change, 6)) for seed, _, _, change in changes["b"]] == [(0, -10.0),
                                                                                 (1, 0.0)]
    assert training_loss_changes(ROWS, "old", ["a"]) == {"a": []}
    assert training_loss_changes(ROWS, "broken", ["a"]) == {"a": []}


def test_markdown_shows_mean_and_interval_and_skips_methods_without_curves():
    text = training_loss_markdown(ROWS, ["m", "old", "broken"], ["a", "b"])
    # a: mean +15, half-width t(0.975, 1) * std / sqrt(2) = 12.706 * 7.071 / 1.414 = 63.5.
    assert "| `m` | +15.0% [-48.5, +78.5] (2 seeds) | -5.0% [-68.5, +58.5] (2 seeds) |" in text
    assert "`old`" not in text and "`broken`" not in text
    assert training_loss_markdown(ROWS, ["old"], ["a", "b"]) == ""


def test_one_seed_has_no_interval():
    rows = [r for r in ROWS if r["seed"] == 0]
    assert "| `m` | +20.0% (1 seed) | -10.0% (1 seed) |" in training_loss_markdown(rows, ["m"],
                                                                                  ["a", "b"])
