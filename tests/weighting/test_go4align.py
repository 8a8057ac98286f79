"""GO4Align: the exact 1-D grouping, two steps by hand, absent tasks, the saved indicators."""

import itertools

import numpy as np
import pytest
from keras import ops

from keras_mtl.weighting.go4align import group_means_1d


def brute_force_group_means(values, num_groups):
    """Every assignment of the values to K labels; the least within-group sum of squares."""
    best, best_cost = None, np.inf
    for labels in itertools.product(range(num_groups), repeat=len(values)):
        labels = np.array(labels)
        means = np.array([values[labels == k].mean() if np.any(labels == k) else 0.0
                          for k in range(num_groups)])
        cost = np.sum((values - means[labels]) ** 2)
        if cost < best_cost - 1e-12:
            best, best_cost = means[labels], cost
    return best


def test_grouping_is_the_exact_k_means(helpers):
    rng = np.random.default_rng(0)
    for num_groups in (1, 2, 3):
        for _ in range(5):
            values = rng.exponential(size=5).astype("float32")
            got = ops.convert_to_numpy(group_means_1d(values, np.ones(5, "float32"), num_groups))
            np.testing.assert_allclose(got, brute_force_group_means(values, num_groups), rtol=1e-5)
    # Absent entries are left out of the groups (and returned as 0).
    values = np.array([1.0, 100.0, 1.2, 5.0], "float32")
    got = ops.convert_to_numpy(group_means_1d(values, np.array([1, 0, 1, 1], "float32"), 2))
    np.testing.assert_allclose(got, [1.1, 0.0, 1.1, 5.0], rtol=1e-6)


def test_two_steps_by_hand(helpers):
    eta = 0.1
    weighting = helpers.make("go4align", num_tasks=3, num_groups=2, robust_step_size=eta)
    p = np.full(3, 1 / 3)
    for losses in ([1.0, 2.0, 4.0], [2.0, 2.0, 1.0]):
        losses = np.array(losses)
        p = p * np.exp(-eta * losses)
        p = p / p.sum()
        raw = losses.sum() / losses * p
        weights = brute_force_group_means(raw, 2)
        total = float(weighting(losses.astype("float32"), np.ones(3, "float32"), training=True))
        np.testing.assert_allclose(ops.convert_to_numpy(weighting.indicators), p, rtol=1e-5)
        np.testing.assert_allclose(helpers.weights_of(weighting), weights, rtol=1e-5)
        assert total == pytest.approx(np.dot(weights, losses), rel=1e-5)
    assert len(np.unique(np.round(helpers.weights_of(weighting), 6))) == 2  # two groups


def test_absent_task_keeps_its_indicator_and_evaluation_updates_nothing(helpers):
    weighting = helpers.make("go4align", num_tasks=3, num_groups=3, robust_step_size=0.5)
    weighting(np.array([1.0, 2.0, 4.0], "float32"), np.ones(3, "float32"), training=True)
    before = ops.convert_to_numpy(weighting.indicators).copy()
    weighting(np.array([3.0, 0.0, 1.0], "float32"), np.array([1, 0, 1], "float32"), training=True)
    after = ops.convert_to_numpy(weighting.indicators)
    assert after[1] == before[1]
    assert after.sum() == pytest.approx(1.0, rel=1e-6)  # the present tasks kept their mass
    # The two present tasks, each its own group: w = (sum L / L_t) * p_t renormalised.
    shares = after[[0, 2]] / after[[0, 2]].sum()
    np.testing.assert_allclose(helpers.weights_of(weighting)[[0, 2]],
                               4.0 / np.array([3.0, 1.0]) * shares, rtol=1e-5)
    store = {}
    weighting.save_own_variables(store)
    restored = helpers.make("go4align", num_tasks=3, num_groups=3, robust_step_size=0.5)
    restored.load_own_variables(store)
    np.testing.assert_array_equal(ops.convert_to_numpy(restored.indicators), after)
    weighting(np.array([1.0, 1.0, 1.0], "float32"), np.ones(3, "float32"), training=False)
    np.testing.assert_array_equal(ops.convert_to_numpy(weighting.indicators), after)
