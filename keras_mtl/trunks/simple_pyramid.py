"""A simple feature pyramid (ViTDet-style) for backbones without all of P2..P5.

A plain ViT has one feature map at the patch stride. Li et al., "Exploring
Plain Vision Transformer Backbones for Object Detection" (ViTDet, ECCV
2022), build the pyramid from that map alone: transposed convolutions for
the finer levels, max pooling for the coarser ones. `simple_feature_pyramid`
does that for any set of levels a backbone has, so a ViT (one level) and a
backbone with three of the four levels both become trunks with P2..P5.
"""

import math

import keras
from keras import layers, ops

from keras_mtl.trunks.pyramid import LEVELS, STRIDES


@keras.saving.register_keras_serializable(package="keras_mtl")
class TokensToGrid(keras.layers.Layer):
    """Turns the tokens of a ViT `(B, T, D)` into a feature map `(B, h, w, D)`.

    The last `h * w` tokens are the patches in row-major order (as in
    KerasHub's ViT, DeiT and DINOv2); the leading ones (class and register
    tokens) are dropped.

    Args:
        grid_size: `(h, w)`, the patch grid.

    Example:

    >>> tokens = np.arange(2 * 5 * 3, dtype="float32").reshape(2, 5, 3)
    >>> TokensToGrid((2, 2))(tokens).shape  # one class token dropped
    TensorShape([2, 2, 2, 3])
    """

    def __init__(self, grid_size, **kwargs):
        super().__init__(**kwargs)
        self.grid_size = tuple(int(size) for size in grid_size)

    def call(self, tokens):
        height, width = self.grid_size
        patches = tokens[:, -height * width:, :]  # (B, h*w, D)
        return ops.reshape(patches, (-1, height, width, tokens.shape[-1]))  # (B, h, w, D)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.grid_size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "grid_size": list(self.grid_size)}


def level_of_stride(stride):
    """The level `"P2"` .. `"P5"` whose stride is nearest to `stride` (in log2)."""
    return min(LEVELS, key=lambda level: abs(math.log2(STRIDES[level]) - math.log2(stride)))


def simple_feature_pyramid(features, name="simple_pyramid"):
    """Completes a pyramid to P2..P5 from the levels present.

    A missing finer level comes from the nearest coarser present level
    through 2x2 stride-2 transposed convolutions, each halving the channels,
    with LayerNorm and GELU between two of them; a missing coarser level is
    a max pooling of the nearest finer present level (ViTDet's simple
    pyramid, without its extra projection convolutions: the task heads
    have their own). Present levels pass through unchanged.

    Args:
        features: dict from level name (`"P2"` .. `"P5"`) to a feature map
            `(B, H/stride, W/stride, C)`; at least one level.
        name: prefix of the new layers' names.

    Returns:
        dict `{"P2": ..., "P5": ...}`.

    Raises:
        ValueError: when `features` holds no level of `LEVELS`.

    Example:

    >>> grid = keras.Input((4, 4, 32))            # a ViT's map at stride 16
    >>> pyramid = simple_feature_pyramid({"P4": grid})
    >>> {k: tuple(v.shape) for k, v in pyramid.items()}
    {'P2': (None, 16, 16, 8), 'P3': (None, 8, 8, 16), 'P4': (None, 4, 4, 32), 'P5': (None, 2, 2, 32)}
    """
    present = [level for level in LEVELS if level in features]
    if not present:
        raise ValueError(f"simple_feature_pyramid needs one of {LEVELS}, got {sorted(features)}.")
    pyramid = {level: features[level] for level in present}
    for index, level in enumerate(LEVELS):
        if level in pyramid:
            continue
        finer = [other for other in present if LEVELS.index(other) < index]
        if finer:  # coarser than a present level: pool the nearest finer one
            source = finer[-1]
            size = STRIDES[level] // STRIDES[source]
            pyramid[level] = layers.MaxPooling2D(size, name=f"{name}_{level}_pool")(
                features[source])  # (B, H/stride, W/stride, C)
            continue
        source = next(other for other in present if LEVELS.index(other) > index)
        x = features[source]
        steps = int(math.log2(STRIDES[source] // STRIDES[level]))
        for step in range(steps):
            if step:
                x = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_{level}_norm{step}")(x)
                x = layers.Activation("gelu", name=f"{name}_{level}_gelu{step}")(x)
            x = layers.Conv2DTranspose(max(x.shape[-1] // 2, 1), 2, strides=2,
                                       name=f"{name}_{level}_up{step + 1}")(x)  # 2x finer
        pyramid[level] = x
    return {level: pyramid[level] for level in LEVELS}
