"""`check_export`: one per-head parity table of exported models against `predict`.

Each export (a SavedModel directory, a `.tflite` file, a `.onnx` file) is run
on the same images and every decoded output is compared with the Keras
model's `predict`, with a measure and a tolerance that fit the output:

| output | measure | tolerance |
|---|---|---|
| probabilities (classification, `name_probs`, any float output) | max absolute difference | 1e-5 |
| class maps (segmentation, any integer output) | share of pixels that differ | 1e-5 |
| `name_boxes` | max absolute difference over the detections, in the box format's units (pixels for `"xyxy"`) | 1e-3 |
| `name_scores` | max absolute difference over the detections | 1e-5 |
| `name_labels` | share of the detections with another class | 0 |
| `name_num_detections` | share of the images with another count | 0 |

"The detections" are the first `num_detections` rows of `predict`'s output
per image (the rest is padding). Quantized TFLite files do not meet these
tolerances: check them with `raise_on_failure=False`, which only reports.
"""

import os
from collections.abc import Mapping

import numpy as np

from keras_mtl.progress import progress

TOLERANCES = {"probabilities": 1e-5, "class_map": 1e-5, "boxes": 1e-3, "scores": 1e-5,
              "labels": 0.0, "num_detections": 0.0}
MEASURES = {
    "probabilities": "max abs diff",
    "class_map": "share of pixels differing",
    "boxes": "max abs diff (box units)",
    "scores": "max abs diff",
    "labels": "share differing",
    "num_detections": "share of images differing",
}
DETECTION_KINDS = ("boxes", "scores", "labels", "num_detections")


def export_format(path):
    """`"SavedModel"`, `"TFLite"` or `"ONNX"`, from an export's path."""
    path = os.fspath(path)
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise ValueError(f"{path!r} is a folder without saved_model.pb (not a SavedModel).")
        return "SavedModel"
    if path.endswith(".tflite"):
        return "TFLite"
    if path.endswith(".onnx"):
        return "ONNX"
    raise ValueError(f"Cannot tell the format of {path!r}: expected a SavedModel folder, a "
                     ".tflite or a .onnx file.")


def run_export(path, images):
    """Runs an export's serving function on `images`; `{output name: numpy array}`."""
    images = np.asarray(images, "float32")
    fmt = export_format(path)
    if fmt == "TFLite":
        from keras_mtl.tflite import run_tflite

        return run_tflite(path, images)
    if fmt == "ONNX":
        from keras_mtl.onnx import run_onnx

        return run_onnx(path, images)
    import tensorflow as tf

    served = tf.saved_model.load(os.fspath(path)).signatures["serving_default"]
    return {name: value.numpy() for name, value in served(images=tf.constant(images)).items()}


def output_kinds(model, outputs):
    """`{output name: kind}` (a key of `TOLERANCES`) of a model's decoded outputs."""
    from keras_mtl.tasks import Detection

    kinds = {}
    for task in model.tasks:
        if isinstance(task, Detection):
            kinds.update({f"{task.name}_{kind}": kind for kind in DETECTION_KINDS})
    for name, value in outputs.items():
        if name not in kinds:
            integer = np.issubdtype(np.asarray(value).dtype, np.integer)
            kinds[name] = "class_map" if integer else "probabilities"
    return {name: kinds[name] for name in outputs}


def _detections(model, expected, name):
    """`(B, K)` bool: the rows of detection output `name` that `predict` filled."""
    for task in model.tasks:
        counts = expected.get(f"{task.name}_num_detections")
        if counts is not None and name.startswith(f"{task.name}_"):
            width = expected[name].shape[1]
            return np.arange(width)[None, :] < np.asarray(counts)[:, None]
    raise ValueError(f"No detection count for output '{name}'.")


def difference(kind, expected, got, rows=None):
    """The measure of `kind` between `predict`'s `expected` and an export's `got`.

    Args:
        kind: a key of `TOLERANCES`.
        expected, got: arrays of one output, same shape.
        rows: for `boxes`, `scores`, `labels`: `(B, K)` bool, the detections.

    Returns:
        float (0.0 when there is nothing to compare).

    Example:

    >>> difference("class_map", np.array([[0, 1], [2, 2]]), np.array([[0, 1], [2, 0]]))
    0.25
    >>> difference("boxes", np.zeros((1, 2, 4)), np.ones((1, 2, 4)),
    ...            rows=np.array([[True, False]]))
    1.0
    """
    expected, got = np.asarray(expected), np.asarray(got)
    if rows is not None:
        expected, got = expected[rows], got[rows]
    if expected.size == 0:
        return 0.0
    if kind in ("class_map", "labels", "num_detections"):
        return float(np.mean(expected != got))
    return float(np.max(np.abs(got.astype("float64") - expected.astype("float64"))))


class ParityReport(Mapping):
    """The per-head parity of exports: `report[output]` is the worst measure
    over the exports; `by_export[label][output]` each export's.

    Attributes:
        kinds: `{output: kind}`.
        by_export: `{export label: {output: measure}}`.
        tolerances: `{kind: tolerance}`.
    """

    def __init__(self, kinds, by_export, tolerances):
        self.kinds = kinds
        self.by_export = by_export
        self.tolerances = tolerances

    def __getitem__(self, name):
        return max(values[name] for values in self.by_export.values())

    def __iter__(self):
        return iter(self.kinds)

    def __len__(self):
        return len(self.kinds)

    def failures(self):
        """`[(export, output, measure, tolerance)]` for every measure above its tolerance."""
        return [(label, name, value, self.tolerances[self.kinds[name]])
                for label, values in self.by_export.items() for name, value in values.items()
                if value > self.tolerances[self.kinds[name]]]

    def table(self):
        """The report as a text table: one row per output, one column per export."""
        labels = list(self.by_export)
        width = max(len("output"), *(len(name) for name in self.kinds))
        measure_width = max(len(MEASURES[kind]) for kind in self.kinds.values())
        header = (f"{'output'.ljust(width)}  {'measure'.ljust(measure_width)}  {'tolerance':>9}"
                  + "".join(f"  {label:>10}" for label in labels))
        lines = [header]
        for name, kind in self.kinds.items():
            cells = "".join(f"  {self.by_export[label][name]:10.2g}" for label in labels)
            lines.append(f"{name.ljust(width)}  {MEASURES[kind].ljust(measure_width)}  "
                         f"{self.tolerances[kind]:>9g}{cells}")
        return "\n".join(lines)


def check_export(model, exports, images, tolerances=None, raise_on_failure=True,
                 verbose=False):
    """Compares exported models with `model.predict`, output by output.

    Args:
        model: the exported `keras_mtl.MultiTaskModel`.
        exports: one export or a list of them: a SavedModel directory
            (`model.export(dir)`), a `.tflite` file
            (`keras_mtl.tflite.export_tflite`), a `.onnx` file
            (`model.export(file, format="onnx")`).
        images: a batch of raw images `(B, H, W, 3)`, 0..255.
        tolerances: `{kind: tolerance}` replacing entries of `TOLERANCES`.
        raise_on_failure: raise if a measure is above its tolerance;
            `False` only reports (quantized models).
        verbose: print the table.

    Returns:
        A `ParityReport`: `report[output]` is the worst measure of the
        output over the exports, `report.by_export` the measures per
        export (labelled `SavedModel`, `TFLite`, `ONNX`, or by path where
        two have one format), `report.table()` the printed table.

    Raises:
        AssertionError: an export lacks an output of `predict`, has one of
            another shape, or (with `raise_on_failure`) differs beyond the
            tolerance.

    Example (writing and reloading a SavedModel takes seconds):

    ```python
    model = keras_mtl.build_mtl(
        [keras_mtl.tasks.Classification("label", 3), keras_mtl.tasks.Segmentation("mask", 2)],
        trunk="micro_resnet", weights=None, input_shape=(32, 32, 3))
    _ = model.export("saved", verbose=False)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3))
    report = check_export(model, ["saved"], images, verbose=True)
    # output  measure                    tolerance  SavedModel
    # label   max abs diff                   1e-05  ...
    # mask    share of pixels differing      1e-05  ...
    report["mask"]
    # 0.0
    ```
    """
    if isinstance(exports, (str, os.PathLike)):
        exports = [exports]
    exports = [os.fspath(path) for path in exports]
    formats = [export_format(path) for path in exports]
    labels = [fmt if formats.count(fmt) == 1 else path for fmt, path in zip(formats, exports)]
    limits = {**TOLERANCES, **(tolerances or {})}
    images = np.asarray(images, "float32")
    expected = {name: np.asarray(value) for name, value in
                model.predict(images, verbose=0).items()}
    kinds = output_kinds(model, expected)
    by_export = {}
    for label, path in zip(labels, exports):
        got = run_export(path, images)
        measures = {}
        for name, kind in kinds.items():
            if name not in got:
                raise AssertionError(f"{label} ({path}) lacks output '{name}'; it has "
                                     f"{sorted(got)}.")
            if got[name].shape != expected[name].shape:
                raise AssertionError(f"{label} output '{name}' has shape {got[name].shape}, "
                                     f"predict {expected[name].shape}.")
            rows = _detections(model, expected, name) if kind in DETECTION_KINDS[:3] else None
            measures[name] = difference(kind, expected[name], got[name], rows)
        by_export[label] = measures
    report = ParityReport(kinds, by_export, limits)
    if verbose:
        print(report.table())
    failures = report.failures()
    if raise_on_failure and failures:
        raise AssertionError("Exports differ from predict beyond the tolerances: " + "; ".join(
            f"{label} '{name}' {value:.3g} > {limit:g}"
            for label, name, value, limit in failures))
    return report


def export_and_check(model, output_dir, images):
    """Exports a SavedModel to OUTPUT_DIR/export/1 and prints its per-head parity with predict.

    Args:
        model: the trained `keras_mtl.MultiTaskModel`.
        output_dir: the recipe's `--output-dir`.
        images: a few raw images `(B, H, W, 3)` to compare on.

    Example (see `recipes/pennfudan.py`):

        results["export"] = export_and_check(model, "runs/pennfudan", images[:2])

    Returns:
        `{"dir": export folder, "parity": {output: measure}, "failures": [...]}`;
        an output beyond its tolerance is reported, not raised, so the run's
        results are still written.
    """
    export_dir = os.path.join(output_dir, "export", "1")
    with progress("Exporting the SavedModel"):
        model.export(export_dir, verbose=False)
    print(f"\nSavedModel in {export_dir}; parity with predict per output "
          f"({len(images)} validation images):")
    report = check_export(model, export_dir, images, raise_on_failure=False, verbose=True)
    failures = [f"{name} {value:.3g} > {limit:g}" for _, name, value, limit in report.failures()]
    if failures:
        print("beyond the tolerance: " + "; ".join(failures))
    return {"dir": export_dir, "parity": dict(report), "failures": failures}
