"""CR-MOGM: two smoothed MGDA steps by hand, its limits alpha = 0 and 1, state, XLA."""

import numpy as np

ORTHOGONAL = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")  # MGDA weights (0.8, 0.2)
CONFLICTING = np.array([[1.0, 0.0], [-1.0, 1.0]], "float32")  # MGDA weights (0.6, 0.4)


def test_two_steps_by_hand(helpers):
    weighting = helpers.make("cr_mogm", alpha=0.75)
    first = 0.75 * np.array([0.5, 0.5]) + 0.25 * np.array([0.8, 0.2])
    np.testing.assert_allclose(helpers.aggregate(weighting, ORTHOGONAL), first @ ORTHOGONAL,
                               rtol=1e-5)
    second = 0.75 * first + 0.25 * np.array([0.6, 0.4])
    np.testing.assert_allclose(helpers.aggregate(weighting, CONFLICTING), second @ CONFLICTING,
                               rtol=1e-5)
    np.testing.assert_allclose(helpers.weights_of(weighting), second, rtol=1e-5)
    # alpha = 0 is MGDA; alpha = 1 keeps the uniform weights (the mean gradient).
    np.testing.assert_allclose(helpers.aggregate(helpers.make("cr_mogm", alpha=0.0), CONFLICTING),
                               [0.2, 0.4], atol=1e-5)
    np.testing.assert_allclose(helpers.aggregate(helpers.make("cr_mogm", alpha=1.0), CONFLICTING),
                               CONFLICTING.mean(0), atol=1e-6)


def test_state_saved_and_compiled(helpers):
    grads = np.array([[1.0, 0.0, 0.5], [-1.0, 1.0, 0.0], [0.3, 0.3, -1.0]], "float32")
    steps = [(grads, np.ones(3), [1, 1, 1]), (grads * [[2.0], [1.0], [0.5]], np.ones(3), [1, 0, 1])]
    helpers.assert_state_round_trips("cr_mogm", steps, steps[0], 3)
    helpers.assert_compiled_steps_match_eager("cr_mogm", steps, 3)
