"""TFLite export of a `MultiTaskModel` (float32, dynamic-range or int8), checked
against the SavedModel (TensorFlow only).

The TFLite model has the SavedModel's `serving_default` signature: float32
pixels `(B, H, W, 3)` in 0..255 (`images`) -> the decoded outputs of every
task (DESIGN.md): probabilities, segmentation class maps and the detection
boxes, scores, labels and counts after non-maximum suppression.

Decoding converts to TFLite builtin ops: detection decoding is Cluster-NMS in
plain tensor ops (peaks by max-pool, top-k, IoU matrix), no
`NonMaxSuppressionV5`, and segmentation maps use `tf.argmax` (TFLite's
`ARG_MAX`; `keras.ops.argmax` bit-casts floats, which TFLite has no builtin
for). A Keras model and its SavedModel directory convert alike. A model with
ops that have no builtin needs the TF Select ops (`select_tf_ops="auto"`
falls back to them and warns), and the Flex delegate that runs them is not
linked into `tf.lite.Interpreter` of the TensorFlow 2.21 pip package
(`run_tflite` then raises a clear error); an app must link
`tensorflow-lite-select-tf-ops`.

Quantization:
- `None`: float32 weights and activations.
- `"dynamic"`: int8 weights, float activations (no calibration data).
- `"int8"`: int8 weights and activations, calibrated on `representative_data`
  (images from the training pipeline); input and output stay float32, ops
  without an int8 kernel (decoding) run in float.

Example (conversion takes seconds; `images` is a batch of the model's input):

```python
export_tflite(model, "model.tflite")
export_tflite(model, "model_int8.tflite", quantization="int8",
              representative_data=train_ds)
report = check_tflite("model.tflite", "export/1", images)   # vs the SavedModel
```
"""

import os
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

QUANTIZATIONS = (None, "dynamic", "int8")
SIGNATURE = "serving_default"
FLOAT_OPS_IN_INT8 = ("DIV",)  # ops left in float in an int8 model


def representative_dataset(data, num_images=64):
    """A TFLite `representative_dataset` from a pipeline's images.

    Args:
        data: a `tf.data.Dataset` of `(images, targets[, weights])` or of
            images, batched; or an array `(N, H, W, 3)`.
        num_images: how many images to calibrate on.

    Returns:
        A generator function yielding `{"images": (1, H, W, 3) float32}`.
    """
    def generate():
        seen = 0
        batches = data if isinstance(data, tf.data.Dataset) else [np.asarray(data)]
        for batch in batches:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            images = np.asarray(images, "float32")
            for image in images:
                if seen >= num_images:
                    return
                seen += 1
                yield {"images": image[None]}

    return generate


def _converter(source, quantization, representative_data, num_calibration_images, workdir):
    if isinstance(source, keras.Model):
        # Through a SavedModel (the converter then freezes the variables into
        # constants, which quantization needs).
        from keras_mtl.export import export_saved_model

        saved = os.path.join(workdir, "saved_model")
        export_saved_model(source, saved, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=[SIGNATURE])
    elif isinstance(source, (str, os.PathLike)):
        if not os.path.isdir(source):
            raise ValueError(f"No SavedModel directory at {source!r}.")
        converter = tf.lite.TFLiteConverter.from_saved_model(str(source),
                                                             signature_keys=[SIGNATURE])
    else:
        raise TypeError(
            f"Expected a keras_mtl model or a SavedModel directory, got {type(source).__name__}.")
    if quantization is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "int8":
        converter.representative_dataset = representative_dataset(
            representative_data, num_calibration_images)
    return converter


def export_tflite(model_or_savedmodel, path, quantization=None, representative_data=None,
                  num_calibration_images=64, select_tf_ops="auto"):
    """Converts a `MultiTaskModel` (or its SavedModel) to a TFLite file.

    Args:
        model_or_savedmodel: a `keras_mtl.MultiTaskModel` (preferred: its
            decoding converts to builtin ops) or a SavedModel directory
            written by `keras_mtl.export.export_saved_model`.
        path: the `.tflite` file to write.
        quantization: `None` (float32), `"dynamic"` or `"int8"`.
        representative_data: for `"int8"`: a batched `tf.data.Dataset` of
            `(images, targets)` (e.g. the training pipeline) or an image array.
        num_calibration_images: images used to calibrate `"int8"`.
        select_tf_ops: `False`: builtin ops only; `True`: allow TF Select
            (Flex) ops; `"auto"`: builtins, falling back to Flex ops with a
            warning if some op has no builtin.

    Returns:
        `path`.

    Raises:
        ValueError: unknown `quantization`, `"int8"` without
            `representative_data`, or a conversion that needs TF ops with
            `select_tf_ops=False`.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"Unknown quantization {quantization!r}; use one of {QUANTIZATIONS}.")
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "int8 quantization needs `representative_data`: images from the training pipeline, "
            "e.g. the training tf.data.Dataset.")
    if select_tf_ops not in (True, False, "auto"):
        raise ValueError(f"`select_tf_ops` must be True, False or 'auto', got {select_tf_ops!r}.")

    def convert(with_select):
        with tempfile.TemporaryDirectory(prefix="keras_mtl_tflite_") as workdir:
            converter = _converter(model_or_savedmodel, quantization, representative_data,
                                   num_calibration_images, workdir)
            if with_select:
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                                       tf.lite.OpsSet.SELECT_TF_OPS]
            if quantization != "int8":
                return converter.convert()
            # Quantized integer division fails on a zero divisor (IoU and normalisations
            # of the decoding): those ops stay float.
            options = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_ops=list(FLOAT_OPS_IN_INT8))
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=converter.representative_dataset,
                debug_options=options)
            return debugger.get_nondebug_quantized_model()

    try:
        blob = convert(select_tf_ops is True)
    except Exception as error:  # the converter raises ConverterError (no public class path)
        if select_tf_ops != "auto" or "TF Select" not in str(error):
            if "TF Select" in str(error):
                raise ValueError(
                    "The model needs TensorFlow ops that TFLite has no builtin for; pass "
                    "select_tf_ops=True (needs the Flex delegate at run time) or convert the "
                    "Keras model instead of its SavedModel.\n" + _select_ops(error)) from error
            raise
        warnings.warn("TFLite conversion uses TF Select (Flex) ops: " + _select_ops(error),
                      stacklevel=2)
        blob = convert(True)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as file:
        file.write(blob)
    return path


def _select_ops(error):
    lines = [line.strip() for line in str(error).splitlines() if line.strip().startswith("TF Select ops")]
    return lines[0] if lines else "see the converter's message"


def run_tflite(path, images):
    """Runs a TFLite file's `serving_default` on `images` `(B, H, W, 3)`; returns its outputs."""
    interpreter = tf.lite.Interpreter(model_path=str(path))
    try:
        runner = interpreter.get_signature_runner(SIGNATURE)
        return runner(images=np.asarray(images, "float32"))
    except RuntimeError as error:
        if "Select TensorFlow op" not in str(error):
            raise
        raise RuntimeError(
            f"{path} uses TF Select (Flex) ops, which this TFLite interpreter cannot run (no "
            "Flex delegate linked). Replace the ops without a TFLite builtin (the conversion "
            "warning names them), or run the file where the tensorflow-lite-select-tf-ops "
            "delegate is linked.") from error


def _reference(reference, images):
    if isinstance(reference, keras.Model):
        # `predict` returns the decoded outputs, as the SavedModel's signature does.
        return {k: np.asarray(v) for k, v in reference.predict(np.asarray(images), verbose=0).items()}
    served = tf.saved_model.load(str(reference)).signatures[SIGNATURE]
    return {k: v.numpy() for k, v in served(images=tf.constant(images, tf.float32)).items()}


def check_tflite(path, reference, images, atol=1e-4, verbose=True):
    """Compares a TFLite file's outputs with the SavedModel's (or the model's) on `images`.

    Args:
        path: the `.tflite` file.
        reference: the SavedModel directory (or the `MultiTaskModel`).
        images: sample images `(B, H, W, 3)`, 0..255.
        atol: the largest absolute difference accepted for every output, or
            `None` to only report (quantized models).
        verbose: print the size and differences.

    Returns:
        dict: `size_bytes`, `max_abs_diff` `{output: float}` and, for the
        integer outputs (class maps, labels, counts), `agreement`
        `{output: fraction of equal entries}`.

    Raises:
        AssertionError: an output is missing, has another shape, or differs
            by more than `atol`.
    """
    images = np.asarray(images, "float32")
    expected = _reference(reference, images)
    got = run_tflite(path, images)
    report = {"size_bytes": os.path.getsize(path), "max_abs_diff": {}, "agreement": {}}
    for name, value in expected.items():
        if name not in got:
            raise AssertionError(f"TFLite model lacks output '{name}'; it has {sorted(got)}.")
        if got[name].shape != value.shape:
            raise AssertionError(
                f"TFLite output '{name}' has shape {got[name].shape}, expected {value.shape}.")
        difference = np.abs(got[name].astype("float64") - value.astype("float64"))
        report["max_abs_diff"][name] = float(np.max(difference, initial=0.0))
        if np.issubdtype(value.dtype, np.integer):
            report["agreement"][name] = float(np.mean(got[name] == value)) if value.size else 1.0
    if verbose:
        print(f"{path}: {report['size_bytes'] / 1024:.1f} KiB")
        for name, value in report["max_abs_diff"].items():
            extra = (f", {100 * report['agreement'][name]:.1f}% equal"
                     if name in report["agreement"] else "")
            print(f"  {name}: max abs difference {value:.3g}{extra}")
    if atol is not None:
        for name, value in report["max_abs_diff"].items():
            if value > atol:
                raise AssertionError(
                    f"TFLite output '{name}' differs from the reference by {value:.3g} > {atol}.")
    return report
