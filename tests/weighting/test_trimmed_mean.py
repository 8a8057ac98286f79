"""Trimmed mean: coordinate-wise medians by hand, a NumPy reference with absent tasks, weights."""

import numpy as np


def trimmed_mean_reference(grads, present, trim):
    rows = np.sort(grads[np.asarray(present) > 0], axis=0)
    trim = min(trim, (len(rows) - 1) // 2)
    return rows[trim:len(rows) - trim].mean(axis=0)


def test_hand_worked_median_and_weights(helpers):
    grads = np.array([[1.0, 9.0, -3.0], [2.0, 0.0, 5.0], [7.0, 1.0, 4.0]], "float32")
    weighting = helpers.make("trimmed_mean", num_tasks=3, trim_number=1)
    np.testing.assert_allclose(helpers.aggregate(weighting, grads), [2.0, 1.0, 4.0])  # medians
    # Kept: t1 in coordinate 0, t2 in coordinates 1 and 2: shares 0, 1/3, 2/3.
    np.testing.assert_allclose(helpers.weights_of(weighting), [0.0, 1 / 3, 2 / 3], rtol=1e-6)
    # trim_number = 0: the plain mean.
    weighting = helpers.make("trimmed_mean", num_tasks=3, trim_number=0)
    np.testing.assert_allclose(helpers.aggregate(weighting, grads), grads.mean(0), rtol=1e-6)


def test_matches_a_sorted_reference_with_absent_tasks(helpers):
    rng = np.random.default_rng(3)
    grads = rng.normal(size=(6, 8)).astype("float32")
    for present, trim in (([1] * 6, 2), ([1, 0, 1, 1, 0, 1], 1), ([1, 0, 1, 1, 0, 1], 2),
                          ([0, 0, 1, 0, 0, 0], 1)):
        weighting = helpers.make("trimmed_mean", num_tasks=6, trim_number=trim)
        np.testing.assert_allclose(helpers.aggregate(weighting, grads, present=present),
                                   trimmed_mean_reference(grads, present, trim), rtol=1e-5)
        weights = helpers.weights_of(weighting)
        assert abs(weights.sum() - 1.0) < 1e-5  # shares of the average
        assert np.all(weights[np.asarray(present) == 0] == 0.0)
    helpers.assert_compiled_steps_match_eager(
        "trimmed_mean", [(grads, np.ones(6), [1] * 6), (grads, np.ones(6), [1, 0, 1, 1, 0, 1])], 6)
