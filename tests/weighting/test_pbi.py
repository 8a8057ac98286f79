"""PBI: d1 + theta d2 against a hand computation, its gradient, preferences and the reference."""

import numpy as np
import pytest
import tensorflow as tf


def total_and_gradient(weighting, losses, present, training=True):
    losses = tf.constant(losses, "float32")
    with tf.GradientTape() as tape:
        tape.watch(losses)
        total = weighting(losses, tf.constant(present, "float32"), training=training)
    return float(total), tape.gradient(total, losses).numpy()


def pbi_reference(losses, preference, reference, theta):
    """d1 + theta d2 in float64."""
    shifted = np.asarray(losses, "float64") - reference
    direction = np.asarray(preference, "float64") / np.linalg.norm(preference)
    d1 = shifted @ direction
    return d1 + theta * np.linalg.norm(shifted - d1 * direction)


def test_hand_worked_value_and_gradient(helpers):
    weighting = helpers.make("pbi", theta=5.0)
    total, grad = total_and_gradient(weighting, [1.0, 3.0], [1, 1])
    # w_hat = (1, 1)/sqrt 2: d1 = 4/sqrt 2, the rest (-1, 1) has length sqrt 2.
    assert total == pytest.approx(4 / 2**0.5 + 5 * 2**0.5, rel=1e-5)
    # dPBI/dL = w_hat + theta (-1, 1)/sqrt 2: the task above its share is weighted up.
    np.testing.assert_allclose(grad, [(1 - 5) / 2**0.5, (1 + 5) / 2**0.5], rtol=1e-5)
    np.testing.assert_allclose(helpers.weights_of(weighting), grad, rtol=1e-5)
    # On the ray the penalty vanishes (up to the 1e-12 under the root) and theta does not matter.
    total, grad = total_and_gradient(weighting, [2.0, 2.0], [1, 1])
    assert total == pytest.approx(4 / 2**0.5, abs=1e-5)
    np.testing.assert_allclose(grad, [0.5**0.5, 0.5**0.5], atol=1e-5)


def test_preferences_reference_point_and_an_absent_task(helpers):
    tasks = ["t0", "t1", "t2"]
    weighting = helpers.make("pbi", num_tasks=3, theta=2.0,
                             preferences=dict(zip(tasks, [1.0, 3.0, 2.0])),
                             reference=dict(zip(tasks, [0.5, 0.0, 0.25])))
    losses = [1.0, 2.0, 9.0]
    total, grad = total_and_gradient(weighting, losses, [1, 1, 1])
    expected = pbi_reference(losses, [1.0, 3.0, 2.0], [0.5, 0.0, 0.25], 2.0)
    assert total == pytest.approx(expected, rel=1e-5)
    step = 1e-3  # the gradient against central differences of the float64 reference
    numeric = [(pbi_reference(np.add(losses, step * e), [1, 3, 2], [0.5, 0, 0.25], 2.0)
                - pbi_reference(np.subtract(losses, step * e), [1, 3, 2], [0.5, 0, 0.25], 2.0))
               / (2 * step) for e in np.eye(3)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-3)
    # Task 2 absent: PBI of tasks 0 and 1 alone, zero gradient for task 2.
    total, grad = total_and_gradient(weighting, losses, [1, 1, 0])
    assert total == pytest.approx(pbi_reference(losses[:2], [1, 3], [0.5, 0.0], 2.0), rel=1e-5)
    assert grad[2] == 0.0 and grad[0] != 0.0


def test_invalid_arguments(helpers):
    with pytest.raises(ValueError, match="theta"):
        helpers.make("pbi", theta=-1.0)
    with pytest.raises(ValueError, match="not all 0"):
        helpers.make("pbi", preferences={"t0": 0.0, "t1": 0.0})
    with pytest.raises(ValueError, match="name every task"):
        helpers.make("pbi", reference={"t0": 0.0})
