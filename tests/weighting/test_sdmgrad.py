"""SDMGrad: a NumPy port of LibMTL's inner solver, the MGDA and mean limits, state, XLA."""

import numpy as np

BATCHES = [
    np.array([[1.0, 0.0, 0.5], [0.0, 2.0, -1.0]]),
    np.array([[2.0, 1.0, 0.0], [-1.0, 1.0, 0.0]]),
]


def project_simplex(y):
    u = np.sort(y)[::-1]
    css = np.cumsum(u)
    rho = np.nonzero(u - (css - 1) / np.arange(1, len(y) + 1) > 0)[0][-1]
    return np.maximum(y - (css[rho] - 1) / (rho + 1), 0.0)


def sdmgrad_reference(batches, lamda, lr=5.0, momentum=0.5, iterations=20):
    """LibMTL's SDMGrad with J_1 = the previous batch and J_2 = J_3 = this batch."""
    w, previous, out = np.full(2, 0.5), batches[0], []
    for grads in batches:
        products = previous @ grads.T
        scale = np.mean(np.sqrt(np.maximum(np.diag(products), 0.0)))
        products = products / (scale**2 + 1e-8)
        velocity = None
        for _ in range(iterations):
            gradient = products @ w + lamda * products.mean(axis=1)
            velocity = gradient if velocity is None else momentum * velocity + gradient
            w = project_simplex(w - lr * velocity)
        previous = grads
        out.append((w + lamda * 0.5) / (1 + lamda) @ grads)
    return out


# With the reference's step size (5) the inner iterations do not settle: they bounce
# between faces of the simplex, so float32 rounding moves the result by ~1e-3.
ROUNDING = 5e-3


def test_matches_the_reference_solver(helpers):
    weighting = helpers.make("sdmgrad")
    weighting.build_gradient_state(3)
    for grads, direction in zip(BATCHES, sdmgrad_reference(BATCHES, 0.3)):
        np.testing.assert_allclose(helpers.aggregate(weighting, grads), direction, rtol=ROUNDING)
    # A small step size settles: then float32 matches the float64 port closely.
    weighting = helpers.make("sdmgrad", learning_rate=0.5, iterations=50)
    weighting.build_gradient_state(3)
    for grads, direction in zip(BATCHES, sdmgrad_reference(BATCHES, 0.3, lr=0.5, iterations=50)):
        np.testing.assert_allclose(helpers.aggregate(weighting, grads), direction, rtol=1e-4,
                                   atol=1e-6)


def test_limits_mgda_and_the_mean(helpers):
    orthogonal = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
    weighting = helpers.make("sdmgrad", lamda=0.0, iterations=60, learning_rate=0.5)
    weighting.build_gradient_state(2)
    np.testing.assert_allclose(helpers.aggregate(weighting, orthogonal), [0.8, 0.4],
                               atol=1e-4)  # MGDA's min-norm point
    weighting = helpers.make("sdmgrad", lamda=1e4)
    weighting.build_gradient_state(2)
    np.testing.assert_allclose(helpers.aggregate(weighting, orthogonal), [0.5, 1.0],
                               atol=1e-3)  # the mean gradient


def test_absent_task_state_is_kept_saved_and_compiled(helpers):
    grads = np.stack([BATCHES[0][0], np.full(3, 4.0), BATCHES[0][1]])
    steps = [(grads, np.ones(3), [1, 0, 1]), (grads[::-1], np.ones(3), [1, 1, 1])]
    weighting = helpers.make("sdmgrad", num_tasks=3)
    weighting.build_gradient_state(3)
    helpers.aggregate(weighting, *steps[0])
    assert weighting.task_weights_state.numpy()[1] == np.float32(1 / 3)  # untouched
    assert helpers.weights_of(weighting)[1] == 0.0
    helpers.assert_state_round_trips("sdmgrad", steps, steps[1], 3)
    helpers.assert_compiled_steps_match_eager("sdmgrad", steps, 3, rtol=ROUNDING)
