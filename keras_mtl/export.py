"""SavedModel export with a serving signature of decoded outputs."""

import tensorflow as tf

import keras

from keras_mtl.export_check import check_export  # noqa: F401 (every format's parity check)

SERVING_ENDPOINT = "serve"  # exported as `serving_default` too
UINT8_ENDPOINT = "serve_uint8"


def export_saved_model(model, filepath, verbose=True):
    """Exports `model` as a SavedModel that serves decoded outputs.

    Two signatures take raw pixels `(B, H, W, 3)` of any batch size, at the
    model's input size: `serving_default` (alias of `serve`) takes float32
    0..255 pixels, `serve_uint8` takes uint8. Both return the dict of
    decoded outputs of DESIGN.md (probabilities, class maps, boxes...).
    Loading needs TensorFlow only, not keras_mtl.

    Args:
        model: a `keras_mtl.MultiTaskModel`.
        filepath: the SavedModel directory to write.
        verbose: print Keras' summary of the export.

    Returns:
        `filepath`.

    Example (tracing and writing the SavedModel takes seconds):

    ```python
    model.export("export/shapes/1")
    served = tf.saved_model.load("export/shapes/1")
    outputs = served.signatures["serving_default"](images=tf.zeros((2, 64, 64, 3)))
    ```
    """
    image_shape = tuple(model.image_shape)

    def serve(images):
        return model.decode(model(images, training=False))

    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, dtype in ((SERVING_ENDPOINT, tf.float32), (UINT8_ENDPOINT, tf.uint8)):
        archive.add_endpoint(
            name, serve,
            input_signature=[tf.TensorSpec((None, *image_shape), dtype, name="images")],
        )
    archive.write_out(filepath, verbose=verbose)
    return filepath
