"""ConFIG: a hand-worked case, equal projections on the unit gradients, the pseudo-inverse."""

import numpy as np

CONFLICTING = np.array([[1.0, 0.0], [-1.0, 1.0]], "float32")


def config_reference(grads):
    """TorchJD's ConFIG in float64: pinv of the unit rows, times the summed projections."""
    grads = grads.astype("float64")
    units = grads / np.linalg.norm(grads, axis=1, keepdims=True)
    best = np.linalg.pinv(units) @ np.ones(len(grads))
    unit = best / np.linalg.norm(best)
    return np.sum(grads @ unit) * unit


def test_hand_worked_case(helpers):
    weighting = helpers.make("config")
    direction = helpers.aggregate(weighting, CONFLICTING)
    # U v = 1 gives v = (1, 1 + sqrt 2); with the length sum_t g_t . v_hat,
    # d = (1, 1 + sqrt 2) / (2 sqrt 2).
    np.testing.assert_allclose(direction, np.array([1.0, 1.0 + 2**0.5]) / (2 * 2**0.5), rtol=1e-5)
    np.testing.assert_allclose(helpers.weights_of(weighting) @ CONFLICTING, direction, atol=1e-6)


def test_equal_positive_projections_and_the_pseudo_inverse(helpers):
    rng = np.random.default_rng(0)
    grads = (rng.normal(size=(4, 6)) * [[1.0], [10.0], [0.1], [3.0]]).astype("float32")
    assert (grads @ grads.T).min() < 0  # some pairs conflict
    direction = helpers.aggregate(helpers.make("config", num_tasks=4), grads)
    units = grads / np.linalg.norm(grads, axis=1, keepdims=True)
    projections = units @ direction
    np.testing.assert_allclose(projections, projections.mean(), rtol=1e-4)  # no task favoured
    assert projections.min() > 0.0  # none conflicts with the update
    np.testing.assert_allclose(direction, config_reference(grads), rtol=1e-4)
    # More tasks than dimensions: U U^T is singular and the pseudo-inverse decides.
    many = rng.normal(size=(3, 2)).astype("float32")
    np.testing.assert_allclose(helpers.aggregate(helpers.make("config", num_tasks=3), many),
                               config_reference(many), rtol=1e-4, atol=1e-5)


def test_zero_gradient_is_left_out_and_compiled_steps_match(helpers):
    grads = np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0], [-1.0, 1.0, 0.5]], "float32")
    with_zero = helpers.aggregate(helpers.make("config", num_tasks=3), grads)
    without = helpers.aggregate(helpers.make("config", num_tasks=2), grads[[0, 2]])
    np.testing.assert_allclose(with_zero, without, rtol=1e-5)
    helpers.assert_compiled_steps_match_eager(
        "config", [(grads, np.ones(3), [1, 1, 1]), (grads * 2, np.ones(3), [1, 0, 1])], 3)
