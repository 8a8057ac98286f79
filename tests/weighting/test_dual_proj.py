"""DualProj: a hand-worked projection, the dual cone, the projection's optimality conditions."""

import numpy as np


def test_hand_worked_projection(helpers):
    # The mean (-1/2, 1/4) conflicts with g1 = (1, 0); the cone is x1 >= 0, x2 >= 4 x1:
    # the closest point is (0, 1/4).
    grads = np.array([[1.0, 0.0], [-2.0, 0.5]], "float32")
    np.testing.assert_allclose(helpers.aggregate(helpers.make("dualproj", reg_eps=0.0), grads),
                               [0.0, 0.25], atol=1e-6)
    np.testing.assert_allclose(helpers.aggregate(helpers.make("dualproj"), grads), [0.0, 0.25],
                               atol=1e-3)  # TorchJD's regularisation moves it a little
    # No conflict with the mean: the mean itself.
    agreeing = np.array([[1.0, 0.0], [-1.0, 1.0]], "float32")
    np.testing.assert_allclose(helpers.aggregate(helpers.make("dualproj"), agreeing), [0.0, 0.5],
                               atol=1e-6)


def test_direction_is_the_projection_onto_the_dual_cone(helpers):
    rng = np.random.default_rng(1)
    grads = rng.normal(size=(4, 5)).astype("float32")
    mean = np.full(4, 0.25)
    assert (grads @ grads.mean(0)).min() < 0  # the mean conflicts with a task
    weighting = helpers.make("dualproj", num_tasks=4, reg_eps=0.0)
    direction = helpers.aggregate(weighting, grads)
    v = helpers.weights_of(weighting)
    np.testing.assert_allclose(v @ grads, direction, atol=1e-6)
    products = grads @ direction
    assert products.min() >= -1e-5  # in the dual cone: conflicts with no task
    # KKT of min ||d - g0||^2 s.t. J d >= 0: d - g0 = J^T (v - u), v - u >= 0, (v - u)_t g_t.d = 0.
    assert (v - mean).min() >= -1e-6
    np.testing.assert_allclose((v - mean) * products, 0.0, atol=1e-5)
    assert np.linalg.norm(direction - grads.mean(0)) > 1e-2  # the projection moved it


def test_compiled_steps_match_eager(helpers):
    grads = np.array([[1.0, 0.0, 0.5], [-2.0, 0.5, 0.0], [0.3, 0.3, -1.0]], "float32")
    helpers.assert_compiled_steps_match_eager(
        "dualproj", [(grads, np.ones(3), [1, 1, 1]), (grads, np.ones(3), [1, 1, 0])], 3)
