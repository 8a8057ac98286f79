"""Small ResNets (basic blocks) for CPU demos and tests, trained from scratch."""

import keras
from keras import layers

from keras_mtl.trunks.pyramid import build_pyramid_trunk


def _conv_bn_relu(x, filters, strides, name, relu=True):
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _basic_block(x, filters, strides, name):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False,
                                 name=f"{name}_shortcut_conv")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
    x = _conv_bn_relu(x, filters, strides, f"{name}_1")
    x = _conv_bn_relu(x, filters, 1, f"{name}_2", relu=False)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, x]))


def build_small_resnet(input_shape, widths=(32, 64, 128, 256), blocks=(1, 1, 1, 1),
                       weights=None, name="small_resnet"):
    """A ResNet of basic blocks (He et al., CVPR 2016) as a pyramid trunk.

    The stem is two stride-2 3x3 convolutions, so the first stage already
    sits at stride 4 (P2); each later stage halves the resolution.

    Args:
        input_shape: `(H, W, 3)`, H and W multiples of 32.
        widths: channels of the four stages.
        blocks: basic blocks in each stage.
        weights: `None` or the path of a weights file saved from this trunk.
        name: model name.

    Returns:
        A `keras.Model` from raw pixels to `{"P2", "P3", "P4", "P5"}`.

    Example:

    >>> trunk = build_small_resnet((32, 32, 3), widths=(8, 8, 16, 16))
    >>> {k: tuple(v.shape) for k, v in trunk.output.items()}
    {'P2': (None, 8, 8, 8), 'P3': (None, 4, 4, 8), 'P4': (None, 2, 2, 16), 'P5': (None, 1, 1, 16)}
    """
    images = keras.Input(shape=input_shape)
    x = _conv_bn_relu(images, widths[0] // 2, 2, "stem_1")  # (B, H/2, W/2, C0/2)
    x = _conv_bn_relu(x, widths[0], 2, "stem_2")  # (B, H/4, W/4, C0)
    for stage, (filters, count) in enumerate(zip(widths, blocks)):
        for block in range(count):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, strides, f"stage{stage + 2}_block{block + 1}")
    backbone = keras.Model(images, x, name=name)
    layer_names = {f"P{s + 2}": f"stage{s + 2}_block{blocks[s]}_out" for s in range(4)}
    trunk = build_pyramid_trunk(backbone, layer_names, preprocessing="tf", name=f"trunk_{name}")
    if weights is not None:
        trunk.load_weights(weights)
    return trunk
