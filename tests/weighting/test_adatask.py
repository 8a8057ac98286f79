"""AdaTask: per-task Adam moments on the shared parameters, worked by hand."""

import numpy as np
import pytest
from keras import ops

from keras_mtl import weighting as weighting_lib
from keras_mtl.tasks import Classification


def make(num_tasks=2, dim=2, **kwargs):
    weighting = weighting_lib.get("adatask", **kwargs)
    weighting.set_tasks([Classification(f"t{i}", 2) for i in range(num_tasks)])
    weighting.build_gradient_state(dim)
    return weighting


def test_hand_worked_two_steps(helpers):
    weighting = make()
    # Step 1: m_hat = g, v_hat = g^2, so each term is sign(g) (0 where g = 0): a task 4x
    # smaller moves its parameters as far as the larger one.
    direction, weights = helpers.step(weighting, [[2.0, 0.0], [0.0, -0.5]])
    np.testing.assert_allclose(direction, [1.0, -1.0], rtol=1e-4)  # float32 (1 - 0.999)
    np.testing.assert_allclose(weights, [np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-4)
    # Step 2, task 0's gradient halves: m = 0.9 * 0.2 + 0.1 * 1 = 0.28, m_hat = 0.28 / 0.19;
    # v = 0.999 * 0.004 + 0.001 * 1 = 0.004996, v_hat = 0.004996 / 0.001999.
    direction, _ = helpers.step(weighting, [[1.0, 0.0], [0.0, -0.5]])
    expected = (0.28 / 0.19) / (np.sqrt(0.004996 / 0.001999) + 1e-8)  # 0.93218
    np.testing.assert_allclose(direction, [expected, -1.0], rtol=1e-4)
    assert abs(expected - 0.93218) < 1e-4


def test_a_shared_parameter_is_not_dominated_by_the_larger_task(helpers):
    # Both tasks on one parameter, one 100x larger and opposed in sign: summed, Adam would
    # step along the large task only; per task, the two normalised terms cancel.
    direction, _ = helpers.step(make(dim=1), [[100.0], [-1.0]])
    np.testing.assert_allclose(direction, [0.0], atol=1e-6)


def test_absent_task_keeps_its_moments_and_adds_nothing(helpers):
    weighting = make()
    helpers.step(weighting, [[2.0, 0.0], [0.0, -0.5]])
    moments = ops.convert_to_numpy(weighting.first_moments).copy()
    direction, weights = helpers.step(weighting, [[2.0, 0.0], [9.0, 9.0]], present=[1, 0])
    np.testing.assert_allclose(ops.convert_to_numpy(weighting.first_moments)[1], moments[1])
    np.testing.assert_allclose(ops.convert_to_numpy(weighting.task_steps), [2.0, 1.0])
    np.testing.assert_allclose(direction, [1.0, 0.0], rtol=1e-4)
    assert weights[1] == 0.0


def test_bad_settings_rep_grad_and_config():
    with pytest.raises(ValueError, match="beta_1"):
        weighting_lib.get("adatask", beta_1=1.0)
    with pytest.raises(ValueError, match="epsilon"):
        weighting_lib.get("adatask", epsilon=0.0)
    with pytest.raises(ValueError, match="rep_grad"):
        weighting_lib.get("adatask", rep_grad=True)
    restored = weighting_lib.AdaTask.from_config(make(beta_2=0.99).get_config())
    assert (restored.beta_1, restored.beta_2, restored.epsilon) == (0.9, 0.99, 1e-8)


def test_fit_builds_moments_of_the_shared_parameters(helpers, conv_trunk):
    model, last_loss = helpers.fit_two_classifiers(conv_trunk(), "adatask")
    assert np.isfinite(last_loss)
    shared = sum(int(np.prod(v.shape)) for v in model.shared_variables)
    assert model.weighting.first_moments.shape == (2, shared)
    np.testing.assert_allclose(ops.convert_to_numpy(model.weighting.task_steps), [2.0, 2.0])
    assert np.any(ops.convert_to_numpy(model.weighting.second_moments) > 0.0)
