"""ONNX export of a `MultiTaskModel` with decoded outputs, run with ONNX Runtime.

The ONNX file has the SavedModel's `serving_default` signature: one input,
`images`, float32 pixels `(B, H, W, 3)` in 0..255 of any batch size, at the
model's input size; one output per decoded output of DESIGN.md, with the
same names (`label`, `objects_boxes`, `objects_scores`, `objects_labels`,
`objects_num_detections`, `mask`, ...), dtypes and meanings.
`MultiTaskModel.export(path, format="onnx")` calls `export_onnx`.

How: `keras.Model.export(format="onnx")` (tf2onnx on the TensorFlow
backend) converts a model's `call()`, which returns the raw heads; here it
converts a small Keras model whose `call()` is the multi-task model's
forward pass followed by its decoding (`predict_step`'s function). The
decoding is plain tensor ops, so it converts to standard ONNX operators and
ONNX Runtime runs the file with no custom op: Cluster-NMS's `while_loop`
becomes an ONNX `Loop`, `top_k` `TopK`, the peak test `MaxPool`, the
segmentation `tf.argmax` `ArgMax`.

Needs the `onnx` extra: `pip install "keras_mtl[onnx]"` (tf2onnx, onnxruntime).
`keras_mtl.export_check.check_export` compares the file with `predict`.

Example:

```python
model.export("model.onnx", format="onnx")
outputs = run_onnx("model.onnx", images)          # {name: array}, as predict
check_export(model, "model.onnx", images)         # per-head parity table
```
"""

import importlib.util
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

INPUT_NAME = "images"
INSTALL_HINT = 'ONNX export needs tf2onnx and onnxruntime: pip install "keras_mtl[onnx]".'


def _require(*modules):
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"{INSTALL_HINT} Missing: {', '.join(missing)}.")


class DecodedOutputs(keras.Model):
    """`model`'s forward pass and decoding as one Keras model (what is exported).

    Args:
        model: a `keras_mtl.MultiTaskModel`.
    """

    def __init__(self, model, **kwargs):
        super().__init__(name=f"{model.name}_decoded", **kwargs)
        self.multi_task_model = model

    def call(self, images):
        return self.multi_task_model.decode(self.multi_task_model(images, training=False))


def export_onnx(model, filepath, opset_version=None, verbose=True):
    """Writes `model` as an ONNX file that returns the decoded outputs.

    Args:
        model: a `keras_mtl.MultiTaskModel`.
        filepath: the `.onnx` file to write.
        opset_version: the ONNX opset; `None` for tf2onnx's default.
        verbose: print Keras' line naming the file.

    Returns:
        `filepath`.

    Raises:
        ImportError: tf2onnx is not installed.
    """
    _require("tf2onnx")
    filepath = os.fspath(filepath)
    directory = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    image_shape = tuple(model.image_shape)
    wrapper = DecodedOutputs(model)
    wrapper(tf.zeros((1, *image_shape)))  # built (the export reads its variables)
    signature = [tf.TensorSpec((None, *image_shape), tf.float32, name=INPUT_NAME)]
    with warnings.catch_warnings():
        # Keras' numpy-2 patch of tf2onnx touches `np.object` (a FutureWarning).
        warnings.simplefilter("ignore", FutureWarning)
        keras.Model.export(wrapper, filepath, format="onnx", verbose=verbose,
                           input_signature=signature, opset_version=opset_version)
    return filepath


def run_onnx(filepath, images):
    """Runs an ONNX file written by `export_onnx` with ONNX Runtime (CPU).

    Args:
        filepath: the `.onnx` file.
        images: `(B, H, W, 3)` pixels, 0..255 (any numeric dtype).

    Returns:
        dict `{output name: numpy array}`, as `model.predict` returns.

    Raises:
        ImportError: onnxruntime is not installed.
    """
    _require("onnxruntime")
    import onnxruntime

    session = onnxruntime.InferenceSession(os.fspath(filepath),
                                           providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    values = session.run(names, {INPUT_NAME: np.asarray(images, "float32")})
    return dict(zip(names, values))
