"""Calibrated balancing then PCGrad: hand-worked projections, the calibration it inherits."""

import numpy as np
import pytest
from keras import ops

from keras_mtl import weighting as weighting_lib
from keras_mtl.tasks import Classification


def make(calibration_steps, num_tasks=2, **kwargs):
    weighting = weighting_lib.get("calibrated_pcgrad", calibration_steps=calibration_steps,
                                  seed=0, **kwargs)
    weighting.set_tasks([Classification(f"t{i}", 2) for i in range(num_tasks)])
    return weighting


def test_hand_worked_conflict_is_projected_after_balancing(helpers):
    # g1 = (2, 0), g2 = (-1, 1): norms 2 and sqrt(2), mean m = 1 + sqrt(2) / 2;
    # balanced h1 = (m, 0), h2 = (-m / sqrt(2)) (1, -1)... both of norm m, h1 . h2 = -m^2 / sqrt(2).
    # h1' = h1 - (h1 . h2 / m^2) h2 = (m / 2, m / 2); h2' = h2 - (h1 . h2 / m^2) h1 = (0, m / sqrt(2)).
    m = 1.0 + np.sqrt(2.0) / 2.0
    direction, weights = helpers.step(make(1), [[2.0, 0.0], [-1.0, 1.0]])
    np.testing.assert_allclose(direction, [m / 2.0, m / 2.0 + m / np.sqrt(2.0)], rtol=1e-5)
    # weights c_t w_t: c = (1 + 1/sqrt(2), 1 + 1/sqrt(2)), w = (m / 2, m / sqrt(2)).
    c = 1.0 + 1.0 / np.sqrt(2.0)
    np.testing.assert_allclose(weights, [c * m / 2.0, c * m / np.sqrt(2.0)], rtol=1e-5)


def test_without_conflict_it_is_calibrated_balancing(helpers):
    grads = [[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]]
    direction, _ = helpers.step(make(1), grads)
    reference = weighting_lib.get("calibrated", calibration_steps=1)
    reference.set_tasks([Classification(f"t{i}", 2) for i in range(2)])
    expected = ops.convert_to_numpy(reference.aggregate(np.asarray(grads, "float32")))
    np.testing.assert_allclose(direction, expected, rtol=1e-6)


def test_a_task_scaled_up_does_not_take_over_as_in_plain_pcgrad(helpers):
    # Plain PCGrad on (10, 0), (-1, 1): (5, 5) + (0, 1) = (5, 6); on (1, 0), (-1, 1): (0.5, 1.5).
    # Balanced, the direction's shape does not depend on either task's scale.
    def plain(grads):
        pcgrad = weighting_lib.get("pcgrad", seed=0)
        pcgrad.set_tasks([Classification(f"t{i}", 2) for i in range(2)])
        return ops.convert_to_numpy(pcgrad.aggregate(np.asarray(grads, "float32")))

    np.testing.assert_allclose(plain([[10.0, 0.0], [-1.0, 1.0]]), [5.0, 6.0], rtol=1e-6)
    np.testing.assert_allclose(plain([[1.0, 0.0], [-1.0, 1.0]]), [0.5, 1.5], rtol=1e-6)
    large, _ = helpers.step(make(1), [[10.0, 0.0], [-1.0, 1.0]])
    small, _ = helpers.step(make(1), [[1.0, 0.0], [-1.0, 1.0]])
    shape = [0.5, 0.5 + 1.0 / np.sqrt(2.0)]
    np.testing.assert_allclose(large / ((10.0 + np.sqrt(2.0)) / 2.0), shape, rtol=1e-5)
    np.testing.assert_allclose(small / ((1.0 + np.sqrt(2.0)) / 2.0), shape, rtol=1e-5)


def test_absent_task_gets_weight_zero_and_config_round_trips(helpers):
    weighting = make(3, num_tasks=3)
    _, weights = helpers.step(weighting, [[3.0, 0.0], [-9.0, 9.0], [0.0, 1.0]], present=[1, 0, 1])
    assert weights[1] == 0.0
    np.testing.assert_allclose(weights[[0, 2]], [2.0 / 3.0, 2.0], rtol=1e-6)  # no conflict left
    restored = type(weighting).from_config(weighting.get_config())
    assert (restored.calibration_steps, restored.seed, restored.rep_grad) == (3, 0, False)
    with pytest.raises(ValueError, match="calibration_steps"):
        weighting_lib.get("calibrated_pcgrad", calibration_steps=0)


def test_fit_runs_on_parameter_gradients(helpers, conv_trunk):
    model, last_loss = helpers.fit_two_classifiers(conv_trunk(), "calibrated_pcgrad")
    assert np.isfinite(last_loss)
    np.testing.assert_allclose(ops.convert_to_numpy(model.weighting.norm_count), [2.0, 2.0])
