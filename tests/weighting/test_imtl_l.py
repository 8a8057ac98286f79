"""IMTL-L: the loss, its gradients, and the minimum at exp(s) L = 1."""

import numpy as np
import pytest
import tensorflow as tf


def total_and_gradients(weighting, losses, present):
    losses = tf.constant(losses, "float32")
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(losses)
        total = weighting(losses, tf.constant(present, "float32"), training=True)
    return (float(total), tape.gradient(total, losses).numpy(),
            tape.gradient(total, weighting.log_scales).numpy())


def test_hand_worked_loss_and_gradients(helpers):
    weighting = helpers.make("imtl_l", num_tasks=3)
    s = np.array([0.5, -1.0, 0.0], "float32")
    weighting.log_scales.assign(s)
    losses = np.array([2.0, 4.0, 3.0], "float32")
    total, grad_losses, grad_scales = total_and_gradients(weighting, losses, [1, 1, 0])
    assert total == pytest.approx(np.exp(0.5) * 2 - 0.5 + np.exp(-1.0) * 4 + 1.0, rel=1e-6)
    np.testing.assert_allclose(grad_losses, [np.exp(0.5), np.exp(-1.0), 0.0], rtol=1e-6)
    np.testing.assert_allclose(grad_scales, [np.exp(0.5) * 2 - 1, np.exp(-1.0) * 4 - 1, 0.0],
                               rtol=1e-6)  # d/ds (exp(s) L - s); the absent task's s: 0
    np.testing.assert_allclose(helpers.weights_of(weighting), [np.exp(0.5), np.exp(-1.0), 1.0],
                               rtol=1e-6)  # the absent task keeps its last logged weight


def test_gradient_descent_on_the_scales_equalises_the_scaled_losses(helpers):
    weighting = helpers.make("imtl_l", num_tasks=2)
    losses = np.array([0.1, 5.0], "float32")
    for _ in range(300):
        _, _, grad_scales = total_and_gradients(weighting, losses, [1, 1])
        weighting.log_scales.assign(weighting.log_scales.numpy() - 0.1 * grad_scales)
    scaled = np.exp(weighting.log_scales.numpy()) * losses
    np.testing.assert_allclose(scaled, [1.0, 1.0], rtol=1e-3)  # s_t = -log L_t
    assert weighting.log_scales.trainable  # trained by the model's optimiser
