"""KerasHub presets for trunks: loading a backbone, and its preprocessing as a layer.

A preset is a built-in name (`"resnet_50_imagenet"`), a Kaggle or Hugging
Face handle, or a folder written by `save_to_preset`. Built-in names and
handles need the network; the errors say how to save a preset on another
machine and load it from a folder. `keras_mtl.trunks.from_keras_hub` builds
the trunk from what this module loads.

Example:

>>> layer = preprocessing_layer("torch")  # ImageNet mean/std on 0..1 pixels
>>> [round(float(v), 3) for v in layer(np.full((1, 1, 1, 3), 255, "uint8"))[0, 0, 0]]
[2.249, 2.429, 2.64]

A preset folder (a built-in name needs the network):

```python
backbone = load_backbone("/data/presets/resnet_18", input_shape=(64, 64, 3))
layer = preprocessing_layer(preset="/data/presets/resnet_18")  # its image converter
```
"""

import os
import warnings

import keras

from keras_mtl.trunks.preprocessing import MODES, ImagePreprocessing

_PRESET_WEIGHTS = ("imagenet", "preset", True)


def _import_keras_hub():
    try:
        import keras_hub
    except ImportError as error:
        raise ImportError(
            "KerasHub trunks need the keras-hub package: pip install 'keras_mtl[hub]' "
            "(or pip install keras-hub)."
        ) from error
    return keras_hub


def _offline_error(preset, error):
    return RuntimeError(
        f"Could not download the KerasHub preset '{preset}' ({type(error).__name__}: {error}). "
        "On a machine with internet access, save it to a folder:\n"
        f"    keras_hub.models.Backbone.from_preset('{preset}').save_to_preset('DIR')\n"
        f"    keras_hub.layers.ImageConverter.from_preset('{preset}').save_to_preset('DIR')\n"
        "then copy DIR here and pass trunk='keras_hub:/path/to/DIR'. weights=None needs the "
        "network too (it reads the preset's config)."
    )


def load_backbone(preset, input_shape=None, weights="imagenet"):
    """Loads a KerasHub backbone from a preset name, handle or local folder.

    Args:
        preset: a built-in preset name (`"resnet_50_imagenet"`), a Kaggle or
            Hugging Face handle, or a folder written by `save_to_preset`.
        input_shape: `(H, W, 3)` passed as the backbone's `image_shape`
            (backbones whose constructor takes one).
        weights: `"imagenet"` or `"preset"` for the preset's weights,
            `None` for random weights of the preset's architecture.

    Returns:
        The `keras_hub.models.Backbone`.

    Raises:
        ValueError: unknown `weights`, a missing folder or an unknown preset.
        RuntimeError: the preset could not be downloaded; the message says
            how to save it on another machine and load it from a folder.
    """
    keras_hub = _import_keras_hub()
    if weights not in _PRESET_WEIGHTS and weights not in (None, False):
        raise ValueError(
            f"KerasHub preset '{preset}': weights must be 'imagenet' (or 'preset': the "
            f"preset's weights) or None (random weights), got {weights!r}."
        )
    looks_like_path = os.sep in preset or preset.startswith(".")
    if looks_like_path and "://" not in preset and not os.path.isdir(preset):
        raise ValueError(f"KerasHub preset folder '{preset}' does not exist.")
    options = {"load_weights": weights in _PRESET_WEIGHTS}
    if input_shape is not None:
        options["image_shape"] = tuple(input_shape)
    try:
        try:
            return keras_hub.models.Backbone.from_preset(preset, **options)
        except TypeError as error:  # a backbone without `image_shape`
            if "image_shape" not in str(error):
                raise
            options.pop("image_shape")
            return keras_hub.models.Backbone.from_preset(preset, **options)
    except OSError as error:  # requests' ConnectionError and socket errors are OSErrors
        if os.path.isdir(preset):
            raise
        raise _offline_error(preset, error) from error


def _floats(value, default):
    if value is None:
        return default
    return [float(v) for v in value] if hasattr(value, "__len__") else float(value)


def _converter_layer(converter):
    """`x * scale + offset` of a KerasHub image converter, per channel or global."""
    return keras.layers.Rescaling(_floats(converter.scale, 1.0), _floats(converter.offset, 0.0),
                                  name="preprocessing")


def preprocessing_layer(preprocessing=None, preset=None):
    """The layer that turns raw 0..255 pixels into what the backbone expects.

    Args:
        preprocessing: a `keras_hub.layers.ImageConverter` (its `scale` and
            `offset` are used; resizing is left to the data pipeline), a
            preset whose converter to use, an `ImagePreprocessing` mode
            (`"torch"`, `"tf"`, `"caffe"`, `"none"`), or `None`: the
            converter of `preset`, else `"torch"` (ImageNet mean and std on
            0..1 pixels, what KerasHub's ImageNet presets use).
        preset: the preset the backbone came from, if any.

    Returns:
        A `keras.layers.Rescaling` or `ImagePreprocessing` layer named
        `"preprocessing"`.
    """
    if preprocessing is None and preset is not None:
        keras_hub = _import_keras_hub()
        try:
            return _converter_layer(keras_hub.layers.ImageConverter.from_preset(preset))
        except FileNotFoundError:
            warnings.warn(
                f"KerasHub preset '{preset}' has no image_converter.json; the trunk assumes "
                "ImageNet mean and std on 0..1 pixels (preprocessing='torch'). Pass "
                "preprocessing= to keras_mtl.trunks.from_keras_hub to choose another.",
                stacklevel=3)
    if preprocessing is None:
        preprocessing = "torch"
    if isinstance(preprocessing, str) and preprocessing in MODES:
        return ImagePreprocessing(preprocessing, name="preprocessing")
    if isinstance(preprocessing, (str, os.PathLike)):
        keras_hub = _import_keras_hub()
        preprocessing = keras_hub.layers.ImageConverter.from_preset(os.fspath(preprocessing))
    return _converter_layer(preprocessing)
