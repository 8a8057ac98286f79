"""Experts on a pyramid level and the layer that mixes them with a gate's weights.

Shared by the mixture-of-experts architectures (`mmoe`, `cgc`, `ple`,
`dselect_k`): an expert is a small convolution block on one pyramid level
that keeps the level's shape, so the task heads read mixed experts exactly
as they read the trunk's features.
"""

import keras
from keras import layers, ops

from keras_mtl.registry import keras_serializable


def expert_block(channels, kernel_size, name):
    """One expert for a level: `ReLU(BN(conv_k(x)))`, keeping `x`'s shape.

    A `keras.Sequential` (one layer of the model, so `SharedParts` can
    list it), built on its first call.

    Args:
        channels: C_l, the level's channels.
        kernel_size: the convolution's size.
        name: the expert's name (unique in the model).

    Returns:
        a `keras.Sequential` mapping `(B, H_l, W_l, C_l)` to the same shape.

    Example:

    >>> expert = expert_block(8, 3, "expert0_P5")
    >>> expert(keras.Input((4, 4, 8))).shape
    (None, 4, 4, 8)
    """
    return keras.Sequential([
        layers.Conv2D(channels, kernel_size, padding="same", use_bias=False, name="conv"),
        layers.BatchNormalization(name="bn"),
        layers.ReLU(name="relu"),
    ], name=name)


@keras_serializable
class ExpertMixture(keras.layers.Layer):
    """Weighted sum of E same-shaped expert outputs with per-sample weights.

    Inputs: `[weights, expert_1, ..., expert_E]`, `weights` `(B, E)` (a
    gate's output) and each expert `(B, ...)`; output:
    `sum_e weights[:, e] * expert_e`, `(B, ...)`.

    Example:

    >>> mix = ExpertMixture()
    >>> out = mix([np.array([[0.25, 0.75]], "float32"),
    ...            np.ones((1, 2, 2, 3), "float32"), np.zeros((1, 2, 2, 3), "float32")])
    >>> float(out[0, 0, 0, 0])
    0.25
    """

    def call(self, inputs):
        weights, experts = inputs[0], list(inputs[1:])
        stacked = ops.stack(experts, axis=1)  # (B, E, ...)
        weights = ops.cast(weights, stacked.dtype)  # (B, E)
        weights = ops.reshape(weights, (-1, len(experts)) + (1,) * (len(stacked.shape) - 2))
        return ops.sum(weights * stacked, axis=1)  # (B, ...)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1])


def pooled(x, name):
    """`(B, C_l)`: a level's features averaged over space, a gate's input."""
    return layers.GlobalAveragePooling2D(name=name)(x)
