"""Turn any image model into a trunk that returns pyramid features P2..P5."""

import keras

from keras_mtl.trunks.preprocessing import ImagePreprocessing

LEVELS = ("P2", "P3", "P4", "P5")
STRIDES = {"P2": 4, "P3": 8, "P4": 16, "P5": 32}


def find_pyramid_layers(model):
    """Names of the last layer at strides 4, 8, 16 and 32 of `model`.

    Used for user-supplied models: walks the layers in order and keeps, for
    each stride, the last layer whose output has height `H / stride`.

    Args:
        model: a `keras.Model` with one image input of known height.

    Returns:
        dict `{"P2": name, ..., "P5": name}`.

    Raises:
        ValueError: if the model has no layer at one of the strides.
    """
    height = model.inputs[0].shape[1]
    if height is None:
        raise ValueError(
            f"Trunk '{model.name}' needs a fixed input height to find its pyramid levels; "
            "build it with a full `input_shape`."
        )
    last = {}
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if shape is not None and len(shape) == 4 and shape[1]:
            last[height // shape[1] if height % shape[1] == 0 else None] = layer.name
    missing = [level for level in LEVELS if STRIDES[level] not in last]
    if missing:
        raise ValueError(
            f"Trunk '{model.name}' has no layer at the strides of {missing} for input height "
            f"{height}; pass `pyramid_layers={{'P2': name, ...}}` or a larger input."
        )
    return {level: last[STRIDES[level]] for level in LEVELS}


def build_pyramid_trunk(model, layer_names, preprocessing="none", name=None):
    """Wraps `model` into a trunk: raw pixels -> `{"P2": ..., "P5": ...}`.

    Args:
        model: the backbone `keras.Model` (one image input).
        layer_names: dict mapping each level in `LEVELS` to a layer name.
        preprocessing: an `ImagePreprocessing` mode applied first.
        name: name of the returned model (default `trunk_<model.name>`).

    Returns:
        A Functional `keras.Model` whose input is `(H, W, 3)` raw pixels and
        whose output is a dict of four feature maps, strides 4 to 32.
    """
    features = keras.Model(
        model.inputs,
        {level: model.get_layer(layer_names[level]).output for level in LEVELS},
        name=f"{model.name}_pyramid",
    )
    images = keras.Input(shape=model.inputs[0].shape[1:], name="images")
    x = ImagePreprocessing(preprocessing, name="preprocessing")(images)  # (B, H, W, 3)
    return keras.Model(images, features(x), name=name or f"trunk_{model.name}")
