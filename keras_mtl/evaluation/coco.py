"""COCO-style box mAP with `pycocotools`, over a whole validation set.

`coco_map` scores padded ground truth and padded detections (arrays as a
`Detection` task produces them); `evaluate_detection` runs a model's
decoding over a dataset and scores it; `DetectionMAPCallback` logs the mAP
at the end of training epochs.

The numbers are pycocotools' own (`COCOeval`, `iouType="bbox"`): AP
averaged over IoU thresholds .50:.05:.95 and 101 recall points, per class,
then over the classes that have ground truth. Up to 100 detections per image
count (COCO's `maxDets`); detections of classes without ground truth are
ignored, as in COCO.
"""

import contextlib
import io
import math

import keras
import numpy as np

_AREAS = ("all", "small", "medium", "large")


def _to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def _per_image(values, keys, what):
    """A padded dict of arrays `(I, N, ...)`, or a list of per-image dicts -> list of dicts."""
    if isinstance(values, dict):
        missing = [k for k in keys if k not in values]
        if missing:
            raise ValueError(f"The {what} need keys {list(keys)}; missing {missing}.")
        arrays = {k: _to_numpy(values[k]) for k in values}
        count = len(arrays[keys[0]])
        return [{k: arrays[k][i] for k in arrays} for i in range(count)]
    images = []
    for image in values:
        missing = [k for k in keys if k not in image]
        if missing:
            raise ValueError(
                f"Each image of the {what} needs keys {list(keys)}; missing {missing}.")
        images.append({k: _to_numpy(v) for k, v in image.items()})
    return images


def _xywh(boxes, bounding_box_format, image_shape):
    """`(N, 4)` boxes in `bounding_box_format` -> absolute `xywh` numpy boxes."""
    boxes = np.asarray(boxes, dtype="float32").reshape(-1, 4)
    if len(boxes) == 0:
        return boxes
    height, width = (None, None) if image_shape is None else (image_shape[0], image_shape[1])
    if bounding_box_format.startswith("rel") and image_shape is None:
        raise ValueError(f"image_shape is needed to read '{bounding_box_format}' boxes.")
    from keras.utils import bounding_boxes

    return _to_numpy(bounding_boxes.convert_format(
        boxes, bounding_box_format, "xywh", height=height, width=width)).astype("float64")


def coco_map(ground_truth, predictions, bounding_box_format="xyxy", image_shape=None,
             num_classes=None, class_names=None, verbose=False):
    """COCO box AP/AR of detections against ground truth, with pycocotools.

    Args:
        ground_truth: `{"boxes": (I, N, 4), "labels": (I, N)}` arrays padded
            with label -1 (ignored), or a list of such dicts, one per image
            (`(N_i, 4)`, `(N_i,)`). Images may have no boxes.
        predictions: `{"boxes": (I, K, 4), "scores": (I, K), "labels":
            (I, K)}` and optionally `"num_detections": (I,)`, as a `Detection`
            task decodes them (label -1 = padding), or a list per image. The
            keys may also carry a task prefix (`"objects_boxes"`, ...).
        bounding_box_format: format of both sets of boxes (a
            `keras.utils.bounding_boxes` name).
        image_shape: `(H, W)` or `(H, W, C)`: needed for `rel_*` formats.
        num_classes: class ids are `0 .. num_classes - 1`; default: the
            labels seen in the ground truth.
        class_names: optional names of the classes, keys of the per-class APs.
        verbose: print pycocotools' own report.

    Returns:
        A dict of floats: `map` (AP@[.5:.95]), `map50`, `map75`,
        `map_small`, `map_medium`, `map_large`, `mar_1`, `mar_10`, `mar_100`
        (average recall with that many detections per image), `ap_per_class`
        and `ap50_per_class` (dicts), and the counts `num_images`,
        `num_ground_truth`, `num_detections`. A value is NaN where it is
        undefined (no ground truth in that class or size range).

    Raises:
        ValueError: on mismatched image counts or missing keys.

    Example:

    >>> gt = {"boxes": np.array([[[10., 10., 30., 30.]]]), "labels": np.array([[0]])}
    >>> pred = {"boxes": gt["boxes"], "scores": np.array([[0.9]]), "labels": gt["labels"]}
    >>> round(coco_map(gt, pred)["map"], 6)
    1.0
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    predictions = _strip_prefix(predictions)
    gt_images = _per_image(ground_truth, ("boxes", "labels"), "ground truth")
    dt_images = _per_image(predictions, ("boxes", "scores", "labels"), "predictions")
    if len(gt_images) != len(dt_images):
        raise ValueError(
            f"ground_truth has {len(gt_images)} images but predictions {len(dt_images)}."
        )

    annotations, detections, seen = [], [], set()
    for image_id, (gt, dt) in enumerate(zip(gt_images, dt_images), start=1):
        labels = np.asarray(gt["labels"]).reshape(-1).astype("int64")
        keep = labels >= 0
        for box, label in zip(_xywh(gt["boxes"], bounding_box_format, image_shape)[keep],
                              labels[keep]):
            seen.add(int(label))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(label) + 1,
                "bbox": [float(v) for v in box], "area": float(box[2] * box[3]), "iscrowd": 0,
            })
        labels = np.asarray(dt["labels"]).reshape(-1).astype("int64")
        scores = np.asarray(dt["scores"]).reshape(-1).astype("float64")
        keep = labels >= 0
        if "num_detections" in dt:
            keep &= np.arange(len(labels)) < int(dt["num_detections"])
        for box, label, score in zip(_xywh(dt["boxes"], bounding_box_format, image_shape)[keep],
                                     labels[keep], scores[keep]):
            detections.append({"image_id": image_id, "category_id": int(label) + 1,
                               "bbox": [float(v) for v in box], "score": float(score)})

    class_ids = list(range(num_classes)) if num_classes is not None else sorted(seen)
    names = list(class_names) if class_names is not None else [str(c) for c in class_ids]
    counts = {"num_images": len(gt_images), "num_ground_truth": len(annotations),
              "num_detections": len(detections)}
    if not annotations:
        nan_classes = {name: math.nan for name in names}
        return {**_nan_summary(), "ap_per_class": nan_classes, "ap50_per_class": dict(nan_classes),
                **counts}

    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": [{"id": i} for i in range(1, len(gt_images) + 1)],
            "annotations": annotations,
            "categories": [{"id": c + 1, "name": n} for c, n in zip(class_ids, names)],
        }
        coco_gt.createIndex()
        # pycocotools cannot load zero results: one detection of a category that
        # is not evaluated keeps it working and changes nothing.
        dummy = {"image_id": 1, "category_id": max(class_ids + [0]) + 2,
                 "bbox": [0.0, 0.0, 1.0, 1.0], "score": 0.0}
        coco_dt = coco_gt.loadRes(detections + [dummy])
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.catIds = [c + 1 for c in class_ids]
        evaluator.evaluate()
        evaluator.accumulate()
        if verbose:
            evaluator.summarize()
    return {**_summary(evaluator, names), **counts}


def _strip_prefix(predictions):
    """Accepts `{task}_boxes`-style keys, as `Detection.decode` names them."""
    if not isinstance(predictions, dict):
        return predictions
    out = {}
    for key, value in predictions.items():
        for short in ("num_detections", "boxes", "scores", "labels"):
            if key == short or key.endswith("_" + short):
                out[short] = value
    return out


def _mean_valid(values):
    values = values[values > -1]
    return float(np.mean(values)) if values.size else math.nan


def _summary(evaluator, names):
    precision = evaluator.eval["precision"]  # (T, R, K, A, M): IoU, recall, class, area, maxDets
    recall = evaluator.eval["recall"]  # (T, K, A, M)
    params = evaluator.params
    last = len(params.maxDets) - 1  # 100 detections
    iou_50 = int(np.argmin(np.abs(params.iouThrs - 0.5)))
    iou_75 = int(np.argmin(np.abs(params.iouThrs - 0.75)))
    area = {label: index for index, label in enumerate(params.areaRngLbl)}
    out = {
        "map": _mean_valid(precision[:, :, :, area["all"], last]),
        "map50": _mean_valid(precision[iou_50, :, :, area["all"], last]),
        "map75": _mean_valid(precision[iou_75, :, :, area["all"], last]),
    }
    for label in _AREAS[1:]:
        out[f"map_{label}"] = _mean_valid(precision[:, :, :, area[label], last])
    for index, max_dets in enumerate(params.maxDets):
        out[f"mar_{max_dets}"] = _mean_valid(recall[:, :, area["all"], index])
    out["ap_per_class"] = {
        name: _mean_valid(precision[:, :, k, area["all"], last]) for k, name in enumerate(names)}
    out["ap50_per_class"] = {
        name: _mean_valid(precision[iou_50, :, k, area["all"], last])
        for k, name in enumerate(names)}
    return out


def _nan_summary():
    keys = ["map", "map50", "map75"] + [f"map_{a}" for a in _AREAS[1:]]
    keys += ["mar_1", "mar_10", "mar_100"]
    return {key: math.nan for key in keys}


def _detection_task(model, task_name):
    from keras_mtl.tasks.detection import Detection

    tasks = [t for t in model.tasks if isinstance(t, Detection)]
    if task_name is None:
        if len(tasks) != 1:
            raise ValueError(
                f"The model has {len(tasks)} detection tasks ({[t.name for t in tasks]}); "
                "pass task_name."
            )
        return tasks[0]
    by_name = {t.name: t for t in model.tasks}
    if task_name not in by_name or not isinstance(by_name[task_name], Detection):
        raise ValueError(
            f"'{task_name}' is not a detection task of the model; its detection tasks are "
            f"{[t.name for t in tasks]}."
        )
    return by_name[task_name]


def predict_detections(model, dataset, task_name=None, steps=None):
    """Decoded detections and ground truth of one detection task over a dataset.

    Runs the model (inference mode) and only that task's decoder, batch by
    batch. Batches without the task's targets are skipped, and so are images
    whose sample weight for the task is 0.

    Args:
        model: a `keras_mtl.MultiTaskModel`.
        dataset: a `tf.data.Dataset` (or iterable) of `(images, targets)` or
            `(images, targets, sample_weights)` batches.
        task_name: the detection task; optional if the model has only one.
        steps: optional number of batches to read.

    Returns:
        `(ground_truth, predictions)`, lists of per-image dicts of numpy
        arrays in the task's box format: `{"boxes", "labels"}` and
        `{"boxes", "scores", "labels", "num_detections"}`.
    """
    import tensorflow as tf

    task = _detection_task(model, task_name)

    @tf.function(reduce_retracing=True)
    def decode(images):
        return task.decode(model(images, training=False)[task.name])

    ground_truth, predictions = [], []
    for step, batch in enumerate(dataset):
        if steps is not None and step >= steps:
            break
        images, targets = batch[0], batch[1]
        weights = batch[2] if len(batch) > 2 and batch[2] is not None else {}
        if task.name not in targets:
            continue
        decoded = {k: v.numpy() for k, v in decode(images).items()}
        gt = {k: _to_numpy(v) for k, v in targets[task.name].items()}
        weight = weights.get(task.name)
        weight = None if weight is None else _to_numpy(weight).reshape(-1)
        for i in range(len(gt["labels"])):
            if weight is not None and weight[i] <= 0:
                continue
            ground_truth.append({"boxes": gt["boxes"][i], "labels": gt["labels"][i]})
            predictions.append({
                "boxes": decoded[f"{task.name}_boxes"][i],
                "scores": decoded[f"{task.name}_scores"][i],
                "labels": decoded[f"{task.name}_labels"][i],
                "num_detections": decoded[f"{task.name}_num_detections"][i],
            })
    return ground_truth, predictions


def evaluate_detection(model, dataset, task_name=None, steps=None, class_names=None,
                       verbose=False):
    """COCO mAP of one detection task of `model` over a whole dataset.

    Args:
        model: a `keras_mtl.MultiTaskModel`.
        dataset: `(images, targets[, sample_weights])` batches, e.g.
            `keras_mtl.data.shapes.make_dataset(500, seed=1)`.
        task_name: the detection task; optional if the model has only one.
        steps: optional number of batches to read.
        class_names: optional class names for the per-class APs.
        verbose: print pycocotools' report.

    Returns:
        The dict of `coco_map`: `map` (mAP@[.5:.95]), `map50`, `map75`, ...

    Example (inference and COCO evaluation, seconds on a CPU):

    ```python
    model = keras_mtl.build_mtl([Detection("objects", 3)], trunk="micro_resnet",
                                weights=None, input_shape=(32, 32, 3))
    ds = keras_mtl.data.shapes.make_dataset(8, image_size=32, tasks=["objects"])
    sorted(evaluate_detection(model, ds))[:3]
    # ['ap50_per_class', 'ap_per_class', 'map']
    ```
    """
    task = _detection_task(model, task_name)
    ground_truth, predictions = predict_detections(model, dataset, task.name, steps)
    return coco_map(ground_truth, predictions, bounding_box_format=task.bounding_box_format,
                    image_shape=tuple(model.image_shape), num_classes=task.num_classes,
                    class_names=class_names, verbose=verbose)


class DetectionMAPCallback(keras.callbacks.Callback):
    """Logs the COCO mAP of a detection task on a validation set during `fit`.

    Adds `val_<task>_map` and `val_<task>_map50` to the epoch logs (so to the
    `History` and to later callbacks such as `EarlyStopping`).

    Args:
        validation_data: batches as for `evaluate_detection`.
        task_name: the detection task; optional if the model has only one.
        frequency: evaluate every `frequency` epochs (and after the last).
        steps: optional number of validation batches.

    Example:

    ```python
    model.fit(train_ds, epochs=3, callbacks=[DetectionMAPCallback(val_ds, "objects")])
    ```
    """

    def __init__(self, validation_data, task_name=None, frequency=1, steps=None):
        super().__init__()
        self.validation_data = validation_data
        self.task_name = task_name
        self.frequency = int(frequency)
        self.steps = steps

    def on_epoch_end(self, epoch, logs=None):
        last = self.params.get("epochs") if self.params else None
        if (epoch + 1) % self.frequency and (last is None or epoch + 1 != last):
            return
        task = _detection_task(self.model, self.task_name)
        result = evaluate_detection(self.model, self.validation_data, task.name, steps=self.steps)
        if logs is not None:
            logs[f"val_{task.name}_map"] = result["map"]
            logs[f"val_{task.name}_map50"] = result["map50"]
