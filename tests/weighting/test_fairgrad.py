"""FairGrad: the alpha-fair equation G w = w^(-1/alpha), closed forms, alpha = 1 is Nash-MTL's."""

import numpy as np
import tensorflow as tf
from keras import ops

from keras_mtl.weighting import solvers
from keras_mtl.weighting.fairgrad import fair_weights

ALPHAS = (0.5, 1.0, 2.0, 5.0)


def test_orthogonal_closed_form(helpers):
    grads = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
    weighting = helpers.make("fairgrad", alpha=2.0)
    direction = helpers.aggregate(weighting, grads, graph=True)
    expected = np.array([1.0, 4.0]) ** (-2.0 / 3.0)  # (G w)_t = |g_t|^2 w_t = w_t^(-1/2)
    np.testing.assert_allclose(helpers.weights_of(weighting), expected, rtol=1e-4)
    np.testing.assert_allclose(direction, expected @ grads, rtol=1e-4)


def test_weights_solve_the_fairness_equation():
    solve = tf.function(fair_weights)
    rng = np.random.default_rng(2)
    for num_tasks in (3, 5):
        grads = rng.normal(size=(num_tasks, 8)) * rng.exponential(3.0, size=(num_tasks, 1))
        gram = grads @ grads.T  # scales up to ~10x apart: conflicting and unbalanced
        for alpha in ALPHAS:
            w = ops.convert_to_numpy(solve(gram.astype("float32"), alpha)).astype("float64")
            assert w.min() > 0.0
            np.testing.assert_allclose(gram @ w, w ** (-1.0 / alpha), rtol=1e-4)
        if num_tasks == 3:  # well conditioned: nash_weights' ridge (1e-6) hardly moves it
            # alpha = 1 is the Nash bargaining solution of Nash-MTL (without its clipping).
            nash = ops.convert_to_numpy(tf.function(solvers.nash_weights)(gram.astype("float32")))
            np.testing.assert_allclose(ops.convert_to_numpy(solve(gram.astype("float32"), 1.0)),
                                       nash, rtol=1e-3)


def test_compiled_steps_match_eager(helpers):
    grads = np.array([[1.0, 0.0, 0.5], [-1.0, 1.0, 0.0], [0.3, 0.3, -1.0]], "float32")
    helpers.assert_compiled_steps_match_eager(
        "fairgrad", [(grads, np.ones(3), [1, 1, 1]), (grads, np.ones(3), [0, 1, 1])], 3,
        graph=True, alpha=2.0)


def test_rep_grad_solves_the_equation_on_the_shared_features(helpers, conv_trunk):
    weighting = helpers.make("fairgrad", rep_grad=True)
    assert weighting.rep_grad and weighting.get_config()["rep_grad"]
    model, last_loss = helpers.fit_two_classifiers(conv_trunk(), weighting)
    assert np.isfinite(last_loss)
    weights = ops.convert_to_numpy(model.weighting.current_weights())  # (2,)
    assert np.all(np.isfinite(weights)) and np.all(weights > 0.0)
