"""MoDo: steps against a NumPy port of LibMTL's update on the double-sampled Gram, state, XLA."""

import numpy as np

BATCHES = [
    np.array([[1.0, 0.0, 0.5], [0.0, 2.0, -1.0]]),
    np.array([[2.0, 1.0, 0.0], [-1.0, 1.0, 0.0]]),
    np.array([[0.5, 0.0, 1.0], [0.0, 3.0, 1.0]]),
]


def project_simplex(y):
    u = np.sort(y)[::-1]
    css = np.cumsum(u)
    rho = np.nonzero(u - (css - 1) / np.arange(1, len(y) + 1) > 0)[0][-1]
    return np.maximum(y - (css[rho] - 1) / (rho + 1), 0.0)


def modo_reference(batches, gamma, rho):
    """LibMTL's MoDo with J_1 = the previous batch (this batch at the first step)."""
    lambd, previous, out = np.full(2, 0.5), batches[0], []
    for grads in batches:
        lambd = project_simplex(lambd - gamma * (previous @ grads.T @ lambd + rho * lambd))
        previous = grads
        out.append((lambd @ grads, lambd))
    return out


def test_matches_the_reference_update(helpers):
    weighting = helpers.make("modo", gamma=0.2, rho=0.1)
    weighting.build_gradient_state(3)
    for grads, (direction, lambd) in zip(BATCHES, modo_reference(BATCHES, 0.2, 0.1)):
        np.testing.assert_allclose(helpers.aggregate(weighting, grads), direction, rtol=1e-5)
        np.testing.assert_allclose(helpers.weights_of(weighting), lambd, rtol=1e-5)
    # The stored Jacobian is the last batch's: the next step pairs it with the new one.
    np.testing.assert_array_equal(weighting.previous_gradients.numpy(), BATCHES[-1])


def test_absent_task_state_is_kept_saved_and_compiled(helpers):
    weighting = helpers.make("modo", num_tasks=3, gamma=0.2)
    weighting.build_gradient_state(3)
    grads = np.stack([BATCHES[0][0], np.full(3, 4.0), BATCHES[0][1]])
    helpers.aggregate(weighting, grads, present=[1, 0, 1])
    assert weighting.seen.numpy()[1] == 0.0
    np.testing.assert_array_equal(weighting.previous_gradients.numpy()[1], 0.0)
    assert abs(weighting.task_weights_state.numpy().sum() - 1.0) < 1e-6
    assert weighting.task_weights_state.numpy()[1] == np.float32(1 / 3)  # untouched
    steps = [(grads, np.ones(3), [1, 1, 1]), (grads[::-1], np.ones(3), [1, 0, 1])]
    helpers.assert_state_round_trips("modo", steps, steps[0], 3, gamma=0.2)
    helpers.assert_compiled_steps_match_eager("modo", steps, 3, gamma=0.2)
