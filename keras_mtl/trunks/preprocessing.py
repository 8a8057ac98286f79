"""Pixel preprocessing that lives inside the model, so users feed raw pixels."""

import keras
from keras import ops

# ImageNet statistics of keras.applications' "caffe" mode (0..255) and "torch" mode (0..1).
_CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
_TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
_TORCH_STD_RGB = (0.229, 0.224, 0.225)
MODES = ("caffe", "tf", "torch", "none")


@keras.saving.register_keras_serializable(package="keras_mtl")
class ImagePreprocessing(keras.layers.Layer):
    """Turns raw 0..255 pixels (uint8 or float) into what a trunk expects.

    The modes match `keras.applications.imagenet_utils.preprocess_input`:
    `"caffe"` (RGB -> BGR, ImageNet mean subtracted; ResNet v1 and VGG),
    `"tf"` (scaled to [-1, 1]; ResNet v2), `"torch"` (scaled to [0, 1], then
    ImageNet mean/std) and `"none"` (cast only).

    Args:
        mode: one of `"caffe"`, `"tf"`, `"torch"`, `"none"`.

    Example:

    >>> layer = ImagePreprocessing("tf")
    >>> layer(np.full((1, 2, 2, 3), 255, "uint8"))[0, 0, 0].numpy()
    array([1., 1., 1.], dtype=float32)
    """

    def __init__(self, mode="caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"Unknown preprocessing mode '{mode}'. Valid modes: {MODES}.")
        self.mode = mode

    def call(self, images):
        x = ops.cast(images, self.compute_dtype)  # (B, H, W, 3)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN_RGB, self.compute_dtype)
            std = ops.convert_to_tensor(_TORCH_STD_RGB, self.compute_dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "caffe":
            mean_bgr = ops.convert_to_tensor(_CAFFE_MEAN_RGB[::-1], self.compute_dtype)
            return ops.flip(x, axis=-1) - mean_bgr
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
