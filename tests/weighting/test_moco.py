"""MoCo: two steps against a NumPy port of LibMTL's update, absent tasks, saved state, XLA."""

import numpy as np
import pytest

STEPS = [  # (grads, losses, present)
    (np.array([[3.0, 4.0, 0.0], [0.0, -1.0, 1.0]]), np.array([2.0, 0.5]), [1, 1]),
    (np.array([[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0]]), np.array([1.0, 3.0]), [1, 1]),
]


def moco_reference(steps, beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.0):
    """LibMTL's MoCo.backward in NumPy: the directions of consecutive steps."""
    y, lambd, out = np.zeros_like(steps[0][0]), np.full(len(steps[0][1]), 0.5), []
    for k, (grads, losses, _) in enumerate(steps, start=1):
        scaled = grads / (np.linalg.norm(grads, axis=1, keepdims=True) + 1e-8) * losses[:, None]
        y = y - beta / k**beta_sigma * (y - scaled)
        logits = lambd - gamma / k**gamma_sigma * (y @ y.T + rho * np.eye(len(y))) @ lambd
        lambd = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        out.append((y.T @ lambd, lambd))
    return out


def test_matches_the_reference_update(helpers):
    weighting = helpers.make("moco", rho=0.1)
    weighting.build_gradient_state(3)
    for (grads, losses, present), (direction, lambd) in zip(STEPS, moco_reference(STEPS, rho=0.1)):
        np.testing.assert_allclose(helpers.aggregate(weighting, grads, losses, present), direction,
                                   rtol=1e-5)
        np.testing.assert_allclose(helpers.weights_of(weighting), lambd, rtol=1e-5)
    with pytest.raises(ValueError, match="losses"):
        weighting.aggregate(STEPS[0][0].astype("float32"))


def test_absent_task_state_is_kept_saved_and_compiled(helpers):
    weighting = helpers.make("moco", num_tasks=3)
    weighting.build_gradient_state(3)
    grads = np.array([[3.0, 4.0, 0.0], [9.0, 9.0, 9.0], [0.0, -1.0, 1.0]])
    direction = helpers.aggregate(weighting, grads, [2.0, 7.0, 0.5], [1, 0, 1])
    expected, lambd = moco_reference([(grads[[0, 2]], np.array([2.0, 0.5]), [1, 1])])[0]
    np.testing.assert_allclose(direction, expected, rtol=1e-5)  # as if task 1 did not exist
    np.testing.assert_allclose(helpers.weights_of(weighting), [lambd[0], 0.0, lambd[1]], rtol=1e-5)
    np.testing.assert_array_equal(weighting.moving_gradients.numpy()[1], 0.0)  # never seen
    steps = [(grads, np.array([2.0, 7.0, 0.5]), [1, 1, 1]), (grads[::-1], np.ones(3), [1, 0, 1])]
    helpers.assert_state_round_trips("moco", steps, steps[0], 3)
    helpers.assert_compiled_steps_match_eager("moco", steps, 3)
