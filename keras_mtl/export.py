"""SavedModel export with a serving signature of decoded outputs."""

import numpy as np
import tensorflow as tf

import keras

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


def check_export(model, filepath, images, atol=1e-4):
    """Reloads a SavedModel and compares its outputs with `model.predict`.

    Args:
        model: the exported `MultiTaskModel`.
        filepath: the SavedModel directory.
        images: a batch of raw images `(B, H, W, 3)`.
        atol: the largest absolute difference accepted.

    Returns:
        dict `{output_name: max_abs_difference}`.

    Raises:
        AssertionError: if an output is missing or differs by more than
            `atol`.
    """
    served = tf.saved_model.load(filepath).signatures["serving_default"]
    reloaded = served(images=tf.cast(images, tf.float32))
    expected = model.predict(np.asarray(images), verbose=0)
    differences = {}
    for name, value in expected.items():
        if name not in reloaded:
            raise AssertionError(f"Exported model lacks output '{name}'; it has {sorted(reloaded)}.")
        got = reloaded[name].numpy().astype("float64")
        differences[name] = float(np.max(np.abs(got - np.asarray(value, "float64")), initial=0.0))
        if differences[name] > atol:
            raise AssertionError(
                f"Exported output '{name}' differs from predict by {differences[name]:.3g} > {atol}."
            )
    return differences
