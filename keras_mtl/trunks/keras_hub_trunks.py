"""KerasHub backbones as trunks: presets, pyramid levels by stride, preprocessing inside.

`pip install keras_mtl[hub]` installs KerasHub. Any `keras_hub.models.Backbone`
of images works: a `FeaturePyramidBackbone` (ResNet, EfficientNet, CSPNet,
DenseNet, MiT, ...) gives its feature maps, mapped to P2..P5 by stride; a
ViT-style backbone (ViT, DeiT, DINOv2, DINOv3: tokens, no spatial pyramid)
gets a ViTDet-style simple pyramid from its last layer
(`keras_mtl.trunks.simple_pyramid`). Levels a backbone lacks are made the
same way. The preset's image converter (scale and offset, i.e. mean and
std) runs inside the model, so the trunk takes raw 0..255 pixels like every
keras_mtl trunk; presets are loaded by `keras_mtl.trunks.keras_hub_presets`.

Example (presets need the network, or a folder written by `save_to_preset`):

```python
backbone = keras_hub.models.ResNetBackbone.from_preset("resnet_18_imagenet")
model = keras_mtl.build_mtl(tasks, trunk=backbone, input_shape=(224, 224, 3))
model = keras_mtl.build_mtl(tasks, trunk="keras_hub:resnet_18_imagenet")
model = keras_mtl.build_mtl(tasks, trunk="keras_hub:/data/presets/my_resnet")
```
"""

import os
import sys

import keras
import numpy as np

from keras_mtl.trunks.keras_hub_presets import load_backbone, preprocessing_layer
from keras_mtl.trunks.pyramid import LEVELS, STRIDES
from keras_mtl.trunks.simple_pyramid import TokensToGrid, level_of_stride, simple_feature_pyramid

PREFIX = "keras_hub:"


def is_keras_hub_backbone(obj):
    """Whether `obj` is a `keras_hub.models.Backbone` (never imports KerasHub)."""
    keras_hub = sys.modules.get("keras_hub")
    return keras_hub is not None and isinstance(obj, keras_hub.models.Backbone)


def _image_input(backbone):
    inputs = keras.tree.flatten(backbone.input)
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise ValueError(
            f"KerasHub backbone '{backbone.name}' must take one batch of images to be a trunk; "
            f"it takes {[tuple(t.shape) for t in inputs]}."
        )
    return inputs[0]


def _resolve_input_shape(backbone, input_shape):
    fixed = tuple(_image_input(backbone).shape[1:])
    if None not in fixed and input_shape is not None and tuple(input_shape) != fixed:
        raise ValueError(
            f"KerasHub backbone '{backbone.name}' takes images of shape {fixed}, but "
            f"input_shape={tuple(input_shape)}; pass input_shape={fixed} or build the backbone "
            "with that image_shape."
        )
    shape = fixed if None not in fixed else tuple(input_shape or ())
    if len(shape) != 3 or None in shape:
        raise ValueError(f"KerasHub trunk '{backbone.name}' needs a full input_shape (H, W, 3).")
    return shape


def _feature_extractor(backbone):
    """A layer from the backbone's images to the outputs a trunk uses.

    A backbone with 4D `pyramid_outputs` gives them through a Functional
    model over its layers; any other (ViT-style) backbone is itself the
    layer, so the saved trunk rebuilds it from the backbone's own config.
    """
    pyramid = getattr(backbone, "pyramid_outputs", None) or {}
    maps = {key: value for key, value in pyramid.items() if len(value.shape) == 4}
    if maps:
        return keras.Model(backbone.input, maps, name=f"{backbone.name}_features")
    return backbone


def _as_dict(outputs):
    if isinstance(outputs, dict):
        return outputs
    return {"last": keras.tree.flatten(outputs)[-1]}  # (B, T, D) tokens or (B, h, w, C)


def _with_static_channels(outputs, features, backbone, input_shape):
    """Gives a static channel count to outputs that lack one (MiT reshapes with -1)."""
    unknown = [key for key, value in outputs.items() if value.shape[-1] is None]
    if not unknown:
        return outputs
    probe = np.zeros((1, *input_shape), "float32")
    shapes = _as_dict(features(keras.tree.pack_sequence_as(backbone.input, [probe])))
    return {key: keras.layers.Reshape(tuple(shapes[key].shape[1:]), name=f"static_{key}")(value)
            if key in unknown else value for key, value in outputs.items()}


def _levels(outputs, input_shape, backbone):
    """Maps the called backbone outputs to pyramid levels by stride.

    A map whose stride is a level's (4, 8, 16, 32) is that level; one at
    another stride near a level (DINOv2's patch 14 gives stride 14 at 224
    px) is resized to it, unless a map has the level's stride exactly.
    Maps much finer than P2 or coarser than P5 are left out.
    """
    height, width = input_shape[:2]
    exact, near = {}, {}
    for key, value in outputs.items():
        if len(value.shape) == 3:  # ViT tokens (B, T, D)
            patch = getattr(backbone, "patch_size", None)
            if patch is None:
                raise ValueError(
                    f"KerasHub backbone '{backbone.name}' returns tokens {tuple(value.shape)} "
                    "but has no patch_size to lay them out on a grid.")
            patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
            value = TokensToGrid((height // patch[0], width // patch[1]),
                                 name="tokens_to_grid")(value)  # (B, H/p, W/p, D)
        stride = height / value.shape[1]
        if not STRIDES["P2"] / 1.5 < stride < STRIDES["P5"] * 1.5:
            continue
        level = level_of_stride(stride)
        (exact if stride == STRIDES[level] else near)[level] = (key, value)  # deeper wins
    levels = {level: value for level, (_, value) in exact.items()}
    for level, (key, value) in near.items():
        if level not in levels:  # (B, h, w, C) -> (B, H/stride, W/stride, C)
            size = (height // STRIDES[level], width // STRIDES[level])
            levels[level] = keras.layers.Resizing(*size, name=f"resize_{key}")(value)
    if not levels:
        raise ValueError(f"KerasHub backbone '{backbone.name}' has no feature map at strides "
                         f"4 to 32 for input height {height}.")
    return levels


def from_keras_hub(backbone, input_shape=None, weights="imagenet", preprocessing=None,
                   name=None):
    """Builds a trunk from a KerasHub backbone: raw pixels -> `{"P2": ..., "P5": ...}`.

    Args:
        backbone: a `keras_hub.models.Backbone` instance, or a preset (a
            built-in name, a Kaggle/Hugging Face handle, or a folder written
            by `save_to_preset`).
        input_shape: `(H, W, 3)`; H and W multiples of 32. Required unless
            the backbone has a fixed image shape (then it must match).
        weights: for a preset, `"imagenet"`/`"preset"` (the preset's
            weights) or `None` (random); ignored for an instance, which
            keeps its own weights.
        preprocessing: see `preprocessing_layer`; by default the preset's
            image converter, and ImageNet mean/std (`"torch"`) for an
            instance (KerasHub backbones do not record their preset).
        name: the trunk's name (default `trunk_<backbone name>`).

    Returns:
        A Functional `keras.Model` whose input is `(H, W, 3)` raw pixels and
        whose output is a dict of four maps at strides 4, 8, 16 and 32.

    Raises:
        ImportError: KerasHub is not installed.
        ValueError: a backbone that does not take one batch of images, a
            shape mismatch, or bad `weights`.
        RuntimeError: a preset that cannot be downloaded (see `load_backbone`).

    Example:

    >>> import keras_hub
    >>> backbone = keras_hub.models.ViTBackbone(
    ...     image_shape=(32, 32, 3), patch_size=16, num_layers=1, num_heads=2,
    ...     hidden_dim=16, mlp_dim=32)
    >>> trunk = from_keras_hub(backbone)
    >>> {k: tuple(v.shape) for k, v in trunk.output.items()}
    {'P2': (None, 8, 8, 4), 'P3': (None, 4, 4, 8), 'P4': (None, 2, 2, 16), 'P5': (None, 1, 1, 16)}
    """
    preset = None
    if isinstance(backbone, (str, os.PathLike)):
        preset = os.fspath(backbone)
        backbone = load_backbone(preset, input_shape=input_shape, weights=weights)
    elif not is_keras_hub_backbone(backbone):
        raise TypeError(f"Expected a keras_hub.models.Backbone or a preset, got {backbone!r}.")
    input_shape = _resolve_input_shape(backbone, input_shape)
    features = _feature_extractor(backbone)

    images = keras.Input(shape=input_shape, name="images")
    x = preprocessing_layer(preprocessing, preset)(images)  # (B, H, W, 3)
    outputs = _as_dict(features(keras.tree.pack_sequence_as(backbone.input, [x])))
    outputs = _with_static_channels(outputs, features, backbone, input_shape)
    levels = _levels(outputs, input_shape, backbone)
    pyramid = simple_feature_pyramid(levels) if set(levels) != set(LEVELS) else levels
    return keras.Model(images, {level: pyramid[level] for level in LEVELS},
                       name=name or f"trunk_{backbone.name}")
