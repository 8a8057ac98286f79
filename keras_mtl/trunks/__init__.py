"""Trunks: shared backbones that return pyramid features P2..P5.

`get(identifier, input_shape, weights)` builds a registered trunk by name
(`names()` lists them), a KerasHub backbone or preset (`"keras_hub:<preset>"`,
see `from_keras_hub`), or wraps a user `keras.Model`.

Example:

>>> trunk = keras_mtl.trunks.get("micro_resnet", input_shape=(32, 32, 3), weights=None)
>>> sorted(trunk.output)
['P2', 'P3', 'P4', 'P5']
"""

import functools

import keras

from keras_mtl.registry import Registry
from keras_mtl.trunks.applications import application_names, build_application_trunk
from keras_mtl.trunks.applications import imagenet_weights_file
from keras_mtl.trunks.keras_hub_trunks import PREFIX as KERAS_HUB_PREFIX
from keras_mtl.trunks.keras_hub_trunks import from_keras_hub, is_keras_hub_backbone
from keras_mtl.trunks.preprocessing import ImagePreprocessing
from keras_mtl.trunks.pyramid import LEVELS, STRIDES, build_pyramid_trunk, find_pyramid_layers
from keras_mtl.trunks.simple_pyramid import TokensToGrid, simple_feature_pyramid
from keras_mtl.trunks.small_resnet import build_small_resnet

TRUNKS = Registry("trunk")

for _name in application_names():
    TRUNKS.register(_name)(functools.partial(build_application_trunk, _name))

TRUNKS.register("resnet18")(
    functools.partial(build_small_resnet, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2),
                      name="resnet18")
)
TRUNKS.register("small_resnet")(  # ~3.6M params: the Penn-Fudan recipe's CPU trunk
    functools.partial(build_small_resnet, widths=(48, 96, 192, 384), blocks=(1, 2, 2, 1),
                      name="small_resnet")
)
TRUNKS.register("tiny_resnet")(
    functools.partial(build_small_resnet, widths=(32, 64, 128, 256), blocks=(1, 1, 1, 1),
                      name="tiny_resnet")
)
TRUNKS.register("micro_resnet")(
    functools.partial(build_small_resnet, widths=(8, 16, 16, 32), blocks=(1, 1, 1, 1),
                      name="micro_resnet")
)


def names():
    """Registered trunk names."""
    return TRUNKS.names()


def get(identifier, input_shape=(224, 224, 3), weights=None, trainable=True,
        preprocessing=None, pyramid_layers=None):
    """Builds a trunk: a `keras.Model` from raw pixels to `{"P2": ..., "P5": ...}`.

    Args:
        identifier: a registered name (see `names()`), a KerasHub backbone
            or `"keras_hub:<preset>"` (a preset name, handle or folder; see
            `from_keras_hub`), or a `keras.Model`. A model that already
            returns the four levels as a dict is used as is; any other image
            model is wrapped, its levels found by stride (or given by
            `pyramid_layers`).
        input_shape: `(H, W, 3)` for registered trunks and KerasHub ones.
        weights: `"imagenet"`, `None` or a weights file path (registered
            trunks; the small ResNets have no ImageNet weights); for a
            KerasHub preset `"imagenet"` means the preset's weights.
        trainable: `False` freezes the trunk; its BatchNorm layers then run
            in inference mode (Keras 3 semantics of a frozen BatchNorm).
        preprocessing: pixel preprocessing for a user model
            (`ImagePreprocessing` mode, default `"none"`) or a KerasHub one
            (default: the preset's image converter); registered trunks
            bring their own.
        pyramid_layers: optional `{"P2": layer_name, ...}` for a user model.

    Returns:
        The trunk `keras.Model`.

    Raises:
        ValueError: unknown name, or a user model without the four strides.
        ImportError: a KerasHub trunk without keras-hub installed.
        RuntimeError: a KerasHub preset that cannot be downloaded (the
            message says how to load it from a folder instead).
    """
    if is_keras_hub_backbone(identifier):
        trunk = from_keras_hub(identifier, input_shape=input_shape, preprocessing=preprocessing)
    elif isinstance(identifier, keras.Model):
        trunk = identifier
        if not (isinstance(trunk.output, dict) and set(trunk.output) == set(LEVELS)):
            layer_names = pyramid_layers or find_pyramid_layers(trunk)
            trunk = build_pyramid_trunk(trunk, layer_names, preprocessing=preprocessing or "none")
    elif isinstance(identifier, str) and identifier.startswith(KERAS_HUB_PREFIX):
        trunk = from_keras_hub(identifier[len(KERAS_HUB_PREFIX):], input_shape=input_shape,
                               weights=weights, preprocessing=preprocessing)
    elif isinstance(identifier, str):
        builder = TRUNKS.lookup(identifier)
        if identifier not in application_names() and weights == "imagenet":
            raise ValueError(
                f"Trunk '{identifier}' has no ImageNet weights; use weights=None or a file path, "
                f"or one of {application_names()}."
            )
        trunk = builder(input_shape=tuple(input_shape), weights=weights)
    else:
        raise TypeError(
            f"A trunk must be a name ({', '.join(names())}), '{KERAS_HUB_PREFIX}<preset>' or a "
            f"keras.Model, got {identifier!r}."
        )
    trunk.trainable = trainable
    return trunk


__all__ = [
    "ImagePreprocessing", "KERAS_HUB_PREFIX", "LEVELS", "STRIDES", "TRUNKS", "TokensToGrid",
    "build_pyramid_trunk", "find_pyramid_layers", "from_keras_hub", "get",
    "imagenet_weights_file", "is_keras_hub_backbone", "names", "simple_feature_pyramid",
]
