"""ResNet and VGG trunks from `keras.applications`, with ImageNet weights."""

import os

import keras

from keras_mtl.trunks.pyramid import build_pyramid_trunk

# name: (constructor, preprocessing mode, pyramid layers P2..P5, ImageNet no-top file)
_APPLICATIONS = {
    "resnet50": (
        "ResNet50", "caffe",
        ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "resnet101": (
        "ResNet101", "caffe",
        ("conv2_block3_out", "conv3_block4_out", "conv4_block23_out", "conv5_block3_out"),
        "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "resnet152": (
        "ResNet152", "caffe",
        ("conv2_block3_out", "conv3_block8_out", "conv4_block36_out", "conv5_block3_out"),
        "resnet152_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    # ResNet v2 is pre-activation: the normalised input of the next stage's
    # first block is the stage's output feature.
    "resnet50v2": (
        "ResNet50V2", "tf",
        ("conv2_block3_preact_relu", "conv3_block4_preact_relu", "conv4_block6_preact_relu",
         "post_relu"),
        "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "resnet101v2": (
        "ResNet101V2", "tf",
        ("conv2_block3_preact_relu", "conv3_block4_preact_relu", "conv4_block23_preact_relu",
         "post_relu"),
        "resnet101v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "resnet152v2": (
        "ResNet152V2", "tf",
        ("conv2_block3_preact_relu", "conv3_block8_preact_relu", "conv4_block36_preact_relu",
         "post_relu"),
        "resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "vgg16": (
        "VGG16", "caffe",
        ("block3_conv3", "block4_conv3", "block5_conv3", "block5_pool"),
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "vgg19": (
        "VGG19", "caffe",
        ("block3_conv4", "block4_conv4", "block5_conv4", "block5_pool"),
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
}


def application_names():
    """Names of the `keras.applications` trunks."""
    return sorted(_APPLICATIONS)


def imagenet_weights_file(name):
    """The file name Keras caches the ImageNet (no-top) weights of `name` under."""
    return _APPLICATIONS[name][3]


def build_application_trunk(name, input_shape=(224, 224, 3), weights="imagenet"):
    """Builds the `keras.applications` model `name` as a pyramid trunk.

    Args:
        name: one of `application_names()`, e.g. `"resnet50"`.
        input_shape: `(H, W, 3)`; H and W at least 32.
        weights: `"imagenet"` (downloaded once into `~/.keras/models`),
            `None` (random), or the path of a weights file of the same
            architecture without its top (`.h5` or `.weights.h5`).

    Returns:
        A `keras.Model` from raw pixels to `{"P2", "P3", "P4", "P5"}`.

    Raises:
        ValueError: for a missing weights file.
        RuntimeError: when the ImageNet download fails; the message says
            where to put the file.
    """
    constructor, mode, layers, weights_file = _APPLICATIONS[name]
    if isinstance(weights, (str, os.PathLike)) and weights != "imagenet":
        if not os.path.exists(weights):
            raise ValueError(f"Trunk '{name}': weights file '{weights}' does not exist.")
        weights = os.fspath(weights)
    application = getattr(keras.applications, constructor)
    try:
        model = application(include_top=False, weights=weights, input_shape=tuple(input_shape))
    except Exception as error:  # keras raises a bare Exception on URL failures
        if weights != "imagenet" or "URL fetch failure" not in str(error):
            raise
        cache = os.path.join(os.environ.get("KERAS_HOME", "~/.keras"), "models", weights_file)
        raise RuntimeError(
            f"Could not download the ImageNet weights of trunk '{name}' ({error}). Download "
            f"'{weights_file}' on a machine with internet access and put it at '{cache}', "
            f"or pass weights='/path/to/{weights_file}'."
        ) from error
    return build_pyramid_trunk(
        model, dict(zip(("P2", "P3", "P4", "P5"), layers)), preprocessing=mode, name=f"trunk_{name}"
    )
