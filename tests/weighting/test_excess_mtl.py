"""ExcessMTL: three steps against a NumPy port of LibMTL's update, absent tasks, state, XLA."""

import numpy as np

STEPS = [
    np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]]),
    np.array([[2.0, 1.0, 0.0], [0.0, 0.5, 0.5]]),
    np.array([[0.1, 0.0, 0.1], [1.0, 1.0, 1.0]]),
]


def excess_reference(steps, eta):
    """LibMTL's ExcessMTL.backward in NumPy: the loss weights after each step."""
    sums, weights, baseline, out = np.zeros_like(steps[0]), np.ones(len(steps[0])), None, []
    for grads in steps:
        sums = sums + grads**2
        excess = np.sum(grads**2 / np.sqrt(sums + 1e-7), axis=1)
        if baseline is None:
            baseline = excess
        else:
            weights = weights * np.exp(eta * excess / baseline)
            weights = weights / weights.sum() * len(weights)
        out.append(weights)
    return out


def test_matches_the_reference_update(helpers):
    weighting = helpers.make("excess_mtl", robust_step_size=0.5)
    weighting.build_gradient_state(3)
    for grads, expected in zip(STEPS, excess_reference(STEPS, 0.5)):
        direction = helpers.aggregate(weighting, grads)
        np.testing.assert_allclose(helpers.weights_of(weighting), expected, rtol=1e-5)
        np.testing.assert_allclose(direction, expected @ grads, rtol=1e-5)
    assert not np.allclose(expected, 1.0)  # the weights moved from the baseline's ones


def test_absent_task_state_is_kept_saved_and_compiled(helpers):
    weighting = helpers.make("excess_mtl", num_tasks=3)
    weighting.build_gradient_state(3)
    grads = np.stack([STEPS[0][0], np.full(3, 5.0), STEPS[0][1]])
    helpers.aggregate(weighting, grads, present=[1, 0, 1])
    helpers.aggregate(weighting, grads * 0.5, present=[1, 0, 1])
    assert weighting.baselines.numpy()[1] == 0.0  # never measured
    np.testing.assert_array_equal(weighting.squared_sums.numpy()[1], 0.0)
    weights = helpers.weights_of(weighting)
    assert weights[1] == 0.0 and abs(weights.sum() - 2.0) < 1e-5  # the present tasks' total
    steps = [(grads, np.ones(3), [1, 1, 1]), (grads[::-1], np.ones(3), [1, 0, 1])]
    helpers.assert_state_round_trips("excess_mtl", steps, steps[0], 3)
    helpers.assert_compiled_steps_match_eager("excess_mtl", steps, 3)
