"""FairGrad: the alpha-fair equation G w = w^(-1/alpha), closed forms, alpha = 1 is Nash-MTL's."""

import numpy as np
import tensorflow as tf
from keras import ops

from keras_mtl.weighting import solvers


def test_orthogonal_closed_form(helpers):
    grads = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
    for alpha in (0.5, 1.0, 2.0):  # (G w)_t = |g_t|^2 w_t = w_t^(-1/alpha)
        weighting = helpers.make("fairgrad", alpha=alpha)
        direction = helpers.aggregate(weighting, grads, graph=True)
        expected = np.array([1.0, 4.0]) ** (-alpha / (alpha + 1.0))
        np.testing.assert_allclose(helpers.weights_of(weighting), expected, rtol=1e-4)
        np.testing.assert_allclose(direction, expected @ grads, rtol=1e-4)


def test_weights_solve_the_fairness_equation(helpers):
    rng = np.random.default_rng(2)
    grads = (rng.normal(size=(3, 6)) * [[1.0], [5.0], [0.2]]).astype("float32")
    gram = grads.astype("float64") @ grads.T
    for alpha in (0.5, 1.0, 2.0, 5.0):
        weighting = helpers.make("fairgrad", num_tasks=3, alpha=alpha)
        helpers.aggregate(weighting, grads, graph=True)
        w = helpers.weights_of(weighting).astype("float64")
        assert w.min() > 0.0
        np.testing.assert_allclose(gram @ w, w ** (-1.0 / alpha), rtol=1e-3)
    # alpha = 1 is the Nash bargaining solution of Nash-MTL (without its clipping).
    nash = ops.convert_to_numpy(tf.function(solvers.nash_weights)(gram.astype("float32")))
    weighting = helpers.make("fairgrad", num_tasks=3, alpha=1.0)
    helpers.aggregate(weighting, grads, graph=True)
    np.testing.assert_allclose(helpers.weights_of(weighting), nash, rtol=1e-3)


def test_compiled_steps_match_eager(helpers):
    grads = np.array([[1.0, 0.0, 0.5], [-1.0, 1.0, 0.0], [0.3, 0.3, -1.0]], "float32")
    helpers.assert_compiled_steps_match_eager(
        "fairgrad", [(grads, np.ones(3), [1, 1, 1]), (grads, np.ones(3), [0, 1, 1])], 3,
        graph=True, alpha=2.0)
