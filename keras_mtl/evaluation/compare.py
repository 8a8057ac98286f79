"""Did multi-task training pay? Train the single-task baselines and compare.

`compare` trains (or takes) the multi-task model, trains one single-task
model per task with `keras_mtl.build_single_task` on the same data (the same
pipeline, with only that task's targets), the same trunk, optimizer, batch
size and number of steps, evaluates all of them on the same validation data
with `evaluate_tasks`, and prints one table: per-task metrics of each model
with their relative difference, delta-m (`keras_mtl.evaluation.delta_m`),
parameters, FLOPs per image, inference images/s and training time.

Example:

```python
result = compare(tasks, train, val, trunk="tiny_resnet", weights=None,
                 input_shape=(128, 128, 3), epochs=10, steps_per_epoch=100)
print(result.table())
result.delta_m
```
"""

import dataclasses
import math
import time

import keras
import numpy as np
import tensorflow as tf

from keras_mtl.evaluation.delta_m import delta_m_per_task
from keras_mtl.evaluation.efficiency import count_params
from keras_mtl.training.schedules import trunk_learning_rate


# --- evaluation --------------------------------------------------------------------------
def _kind(task):
    from keras_mtl.tasks.classification import Classification
    from keras_mtl.tasks.detection import Detection
    from keras_mtl.tasks.segmentation import Segmentation

    if isinstance(task, Detection):
        return "detection"
    if isinstance(task, Segmentation):
        return "segmentation"
    if isinstance(task, Classification):
        return "multi_label" if task.multi_label else "classification"
    return None


def _average_precision(scores, labels):
    """AP of one class: mean precision at the rank of each positive."""
    order = np.argsort(-scores, kind="stable")
    hits = labels[order] > 0
    if not hits.any():
        return math.nan
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


class _Accumulator:
    """Running sums of one task's metrics over a data set (numpy)."""

    def __init__(self, task, class_names=None):
        self.task = task
        self.kind = _kind(task)
        self.class_names = class_names
        self.correct = self.count = 0.0
        self.scores, self.labels = [], []
        self.confusion = None
        self.ground_truth, self.predictions = [], []

    def update(self, target, decoded, weight):
        task, name = self.task, self.task.name
        if self.kind == "classification":
            labels = np.asarray(target).reshape(-1).astype("int64")
            keep = (labels >= 0) & (weight > 0)
            predicted = decoded[name].argmax(-1)
            self.correct += float((predicted[keep] == labels[keep]).sum())
            self.count += float(keep.sum())
        elif self.kind == "multi_label":
            labels = np.asarray(target).astype("int64")
            keep = weight > 0
            self.scores.append(decoded[name][keep])
            self.labels.append(labels[keep])
        elif self.kind == "segmentation":
            labels = np.asarray(target)
            labels = labels[..., 0] if labels.ndim == 4 else labels
            labels = labels.astype("int64")
            predicted = decoded[name].astype("int64")
            valid = (labels >= 0) & (labels < task.num_classes) & (weight[:, None, None] > 0)
            if self.confusion is None:
                self.confusion = np.zeros((task.num_classes, task.num_classes), "int64")
            self.confusion += np.bincount(
                labels[valid] * task.num_classes + predicted[valid],
                minlength=task.num_classes ** 2).reshape(task.num_classes, task.num_classes)
        elif self.kind == "detection":
            for i in range(len(weight)):
                if weight[i] <= 0:
                    continue
                self.ground_truth.append({"boxes": np.asarray(target["boxes"][i]),
                                          "labels": np.asarray(target["labels"][i])})
                self.predictions.append({
                    "boxes": decoded[f"{name}_boxes"][i], "scores": decoded[f"{name}_scores"][i],
                    "labels": decoded[f"{name}_labels"][i],
                    "num_detections": decoded[f"{name}_num_detections"][i]})

    def result(self, image_shape):
        if self.kind == "classification":
            return {"accuracy": self.correct / self.count if self.count else math.nan}
        if self.kind == "multi_label":
            if not self.labels:
                return {"accuracy": math.nan, "map": math.nan}
            scores, labels = np.concatenate(self.scores), np.concatenate(self.labels)
            known = labels >= 0
            accuracy = float(((scores >= 0.5) == (labels > 0))[known].mean()) if known.any() \
                else math.nan
            aps = [_average_precision(scores[known[:, c], c], labels[known[:, c], c])
                   for c in range(labels.shape[1])]
            aps = [ap for ap in aps if not math.isnan(ap)]
            return {"accuracy": accuracy, "map": float(np.mean(aps)) if aps else math.nan}
        if self.kind == "segmentation":
            if self.confusion is None:
                return {"miou": math.nan, "accuracy": math.nan}
            confusion = self.confusion.astype("float64")
            tp = np.diag(confusion)
            union = confusion.sum(0) + confusion.sum(1) - tp
            iou = np.where(union > 0, tp / np.maximum(union, 1), math.nan)
            out = {"miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else math.nan,
                   "accuracy": float(tp.sum() / max(confusion.sum(), 1))}
            names = self.class_names or [str(c) for c in range(len(iou))]
            out.update({f"iou_{names[c]}": float(iou[c]) for c in range(len(iou))})
            return out
        if self.kind == "detection":
            from keras_mtl.evaluation.coco import coco_map

            result = coco_map(self.ground_truth, self.predictions,
                              bounding_box_format=self.task.bounding_box_format,
                              image_shape=image_shape, num_classes=self.task.num_classes)
            return {"map50": result["map50"], "map": result["map"]}
        return {}


def evaluate_tasks(model, dataset, steps=None, class_names=None):
    """Per-task metrics of a `MultiTaskModel` over a data set, in one pass.

    Metrics (labelled examples only: label -1, `ignore_index` pixels and
    sample weight 0 are skipped):
    - classification: `accuracy` (top-1); multi-label: `accuracy` (per
      entry, threshold 0.5) and `map` (mean over classes of average precision).
    - segmentation: `miou` (mean over classes of IoU, from the confusion
      matrix of the whole set), pixel `accuracy`, and `iou_<class>` per class.
    - detection: COCO `map50` and `map` (pycocotools, `coco_map`).

    Args:
        model: a `keras_mtl.MultiTaskModel`.
        dataset: `(images, targets[, sample_weights])` batches; a task missing
            from a batch is skipped there.
        steps: optional number of batches.
        class_names: optional `{task: [class names]}` for `iou_<class>` keys
            (default class ids).

    Returns:
        `{task: {metric: float}}`.
    """
    class_names = class_names or {}
    accumulators = {t.name: _Accumulator(t, class_names.get(t.name)) for t in model.tasks}

    @tf.function(reduce_retracing=True)
    def forward(images):
        return model.decode(model(images, training=False))

    for step, batch in enumerate(dataset):
        if steps is not None and step >= steps:
            break
        images, targets = batch[0], batch[1]
        weights = batch[2] if len(batch) > 2 and batch[2] is not None else {}
        decoded = {k: np.asarray(v) for k, v in forward(images).items()}
        size = int(images.shape[0])
        for name, accumulator in accumulators.items():
            if name not in targets:
                continue
            target = tf.nest.map_structure(np.asarray, targets[name])
            weight = (np.asarray(weights[name]).reshape(-1) if name in weights
                      else np.ones(size, "float32"))
            accumulator.update(target, decoded, weight)
    image_shape = tuple(model.image_shape)
    return {name: acc.result(image_shape) for name, acc in accumulators.items()}


# --- training ----------------------------------------------------------------------------
class TrainTimer(keras.callbacks.Callback):
    """Measures `fit`'s wall time and CPU time without the validation passes.

    `seconds` is wall time; `cpu_seconds` is the process's CPU time
    (`time.process_time`, every thread: TensorFlow's and tf.data's), which
    other jobs on the machine do not inflate as they do the wall time."""

    def on_train_begin(self, logs=None):
        self.start, self.validation_seconds, self._test_start = time.perf_counter(), 0.0, None
        self.cpu_start, self.validation_cpu_seconds = time.process_time(), 0.0

    def on_test_begin(self, logs=None):
        self._test_start = time.perf_counter()
        self._test_cpu_start = time.process_time()

    def on_test_end(self, logs=None):
        if self._test_start is not None:
            self.validation_seconds += time.perf_counter() - self._test_start
            self.validation_cpu_seconds += time.process_time() - self._test_cpu_start
            self._test_start = None

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self.start - self.validation_seconds
        self.cpu_seconds = time.process_time() - self.cpu_start - self.validation_cpu_seconds


@dataclasses.dataclass
class RunResult:
    """One trained model: its metrics, size and training cost."""

    name: str
    model: keras.Model
    metrics: dict
    params: int
    train_seconds: float
    steps: int
    batch_size: int | None = None
    history: dict = dataclasses.field(default_factory=dict)
    train_cpu_seconds: float | None = None  # process CPU time, every thread

    @property
    def train_images_per_second(self):
        if not self.batch_size or not self.train_seconds:
            return None
        return self.steps * self.batch_size / self.train_seconds


def default_optimizer(total_steps, learning_rate=1e-3, weight_decay=1e-4):
    """AdamW with a cosine decay over `total_steps` (what `compare` uses by default)."""
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, max(1, total_steps))
    return keras.optimizers.AdamW(schedule, weight_decay=weight_decay)


def select_tasks(dataset, names):
    """`dataset` with only the targets (and sample weights) of tasks `names`."""
    names = list(names)

    def select(images, targets, weights=None):
        picked = {n: targets[n] for n in names if n in targets}
        if weights is None:
            return images, picked
        return images, picked, {n: weights[n] for n in names if n in weights}

    return dataset.map(select, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _batch_size(dataset):
    """The batch size of a batched dataset (reads one batch if it is not static)."""
    try:
        size = dataset.element_spec[0].shape[0]
    except (AttributeError, IndexError, TypeError):
        return None
    if size is None:
        size = next(iter(dataset))[0].shape[0]
    return int(size)


def train_and_evaluate(model, train_data, validation_data, epochs=1, steps_per_epoch=None,
                       optimizer=None, jit_compile=False, verbose=0, callbacks=None,
                       class_names=None, name=None, trunk_lr=1.0):
    """Compiles, fits and evaluates one model; times the training.

    Args:
        model: a `MultiTaskModel` (not yet compiled).
        train_data, validation_data: batched data sets (validation may be None
            during `fit`; it is needed for the metrics).
        epochs, steps_per_epoch: the budget.
        optimizer: `callable(total_steps) -> optimizer`; default
            `default_optimizer`.
        jit_compile: XLA (usually slower on CPU).
        verbose: `fit` verbosity.
        callbacks: extra `fit` callbacks.
        class_names: see `evaluate_tasks`.
        name: the run's name (default the model's).
        trunk_lr: the trunk's learning rate as a multiple of the heads'; any
            value but 1 compiles with a `trunk_optimizer`
            (`keras_mtl.training.trunk_learning_rate`).

    Returns:
        A `RunResult`.
    """
    steps = steps_per_epoch
    if steps is None:
        cardinality = int(train_data.cardinality())
        if cardinality < 0:
            raise ValueError("steps_per_epoch is needed for an infinite training data set.")
        steps = cardinality
    total_steps = epochs * steps
    make_optimizer = optimizer or default_optimizer
    controls = {}
    if float(trunk_lr) != 1.0:
        controls["trunk_optimizer"] = trunk_learning_rate(make_optimizer(total_steps), trunk_lr)
    model.compile(optimizer=make_optimizer(total_steps), jit_compile=jit_compile, **controls)
    timer = TrainTimer()
    history = model.fit(train_data, validation_data=validation_data, epochs=epochs,
                        steps_per_epoch=steps_per_epoch, verbose=verbose,
                        callbacks=[timer] + list(callbacks or []))
    metrics = ({} if validation_data is None
               else evaluate_tasks(model, validation_data, class_names=class_names))
    return RunResult(name=name or model.name, model=model, metrics=metrics,
                     params=count_params(model), train_seconds=timer.seconds, steps=total_steps,
                     batch_size=_batch_size(train_data), history=dict(history.history),
                     train_cpu_seconds=timer.cpu_seconds)


# --- comparison --------------------------------------------------------------------------
DEFAULT_DELTA_METRICS = {"classification": ("accuracy",), "multi_label": ("map",),
                         "segmentation": ("miou",), "detection": ("map",)}


def _fresh(task):
    return type(task).from_config(task.get_config())


@dataclasses.dataclass
class Comparison:
    """The outcome of `compare`: runs, delta-m and efficiency; `table()` prints it."""

    multi_task: RunResult
    single_task: dict
    delta_metrics: dict
    delta_m: float
    delta_per_task: dict
    efficiency: dict | None = None

    @property
    def train_time_ratio(self):
        """Multi-task training time / the summed single-task times."""
        total = sum(run.train_seconds for run in self.single_task.values())
        return self.multi_task.train_seconds / total if total else None

    def table(self):
        """One text table: metrics, delta-m, parameters, FLOPs, speed, time."""
        rows = [("task", "metric", "multi-task", "single-task", "rel. diff")]
        for task, metrics in self.multi_task.metrics.items():
            single = self.single_task[task].metrics.get(task, {})
            used = self.delta_metrics.get(task, ())
            for metric, value in metrics.items():
                base = single.get(metric, math.nan)
                diff = self.delta_per_task.get(task, {}).get("metrics", {}).get(metric)
                if diff is None and base and not math.isnan(base) and not math.isnan(value):
                    diff = 100.0 * (value - base) / abs(base)
                rows.append((task, metric + (" *" if metric in used else ""), f"{value:.4f}",
                             f"{base:.4f}", "" if diff is None else f"{diff:+.2f}%"))
        lines = _format_rows(rows)
        width = len(lines[0])
        lines.append("-" * width)
        value = ("undefined (a baseline metric is 0 or missing)" if math.isnan(self.delta_m)
                 else f"{self.delta_m:+.2f}%")
        lines.append(f"delta-m (mean over tasks of the mean relative gain of the * metrics): "
                     f"{value}")
        per_task = ", ".join(f"{t} {d['delta']:+.2f}%" for t, d in self.delta_per_task.items())
        lines.append(f"  per task: {per_task}")
        lines.append("-" * width)
        singles = list(self.single_task.values())
        cost = [("", "multi-task", "single-task sum", "ratio")]
        total_params = sum(r.params for r in singles)
        cost.append(("parameters", _short(self.multi_task.params), _short(total_params),
                     f"{self.multi_task.params / total_params:.2f}x"))
        if self.efficiency:
            mtl, total = self.efficiency["multi_task"], self.efficiency["single_task_sum"]
            cost.append(("FLOPs / image", _short(mtl["flops"]), _short(total["flops"]),
                         f"{mtl['flops'] / total['flops']:.2f}x"))
            if mtl.get("images_per_second"):
                cost.append(("inference images/s", f"{mtl['images_per_second']:.1f}",
                             f"{total['images_per_second']:.1f}",
                             f"{mtl['images_per_second'] / total['images_per_second']:.2f}x"))
        total_seconds = sum(r.train_seconds for r in singles)
        ratio = self.train_time_ratio
        cost.append((f"training time ({self.multi_task.steps} steps each)",
                     f"{self.multi_task.train_seconds:.1f} s", f"{total_seconds:.1f} s",
                     "" if ratio is None else f"{ratio:.2f}x"))
        lines.extend(_format_rows(cost))
        return "\n".join(lines)

    def to_dict(self):
        """A JSON-able summary (no models)."""
        def run(r):
            return {"metrics": r.metrics, "params": r.params, "train_seconds": r.train_seconds,
                    "steps": r.steps, "batch_size": r.batch_size}

        return {"multi_task": run(self.multi_task),
                "single_task": {t: run(r) for t, r in self.single_task.items()},
                "delta_metrics": {t: list(m) for t, m in self.delta_metrics.items()},
                "delta_m": self.delta_m, "delta_per_task": self.delta_per_task,
                "train_time_ratio": self.train_time_ratio, "efficiency": self.efficiency}


def _short(number):
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(number) >= size:
            return f"{number / size:.2f}{unit}"
    return str(number)


def _format_rows(rows):
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [str(c).ljust(w) if i == 0 or (i == 1 and len(row) == 5) else str(c).rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths))]
        out.append("  ".join(cells))
    return out


def compare(tasks, train_data, validation_data, trunk="tiny_resnet", weights=None,
            input_shape=(128, 128, 3), weighting="equal", epochs=1, steps_per_epoch=None,
            optimizer=None, jit_compile=False, multi_task=None, delta_metrics=None,
            higher_is_better=None, class_names=None, efficiency=True, speed_batch_size=8,
            verbose=0, callbacks=None, print_table=True, seed=0):
    """Trains single-task baselines like the multi-task model; prints one table.

    Every model gets the same trunk, input size, optimizer recipe, data
    pipeline (single-task models see only their task's targets), batch size
    and number of steps; the same seed is set before each is built.

    Args:
        tasks: the `keras_mtl.tasks` of the multi-task model.
        train_data: batched training `tf.data.Dataset` with every task's
            targets (augmentation inside it applies to every run).
        validation_data: batched validation data, for the metrics.
        trunk, weights, input_shape: as for `build_mtl`.
        weighting: the multi-task weighting.
        epochs, steps_per_epoch: the training budget of every model.
        optimizer: `callable(total_steps) -> optimizer` (default AdamW +
            cosine, `default_optimizer`).
        jit_compile: XLA.
        multi_task: an already trained `RunResult` of the multi-task model
            (e.g. from `train_and_evaluate`); default: train it here.
        delta_metrics: `{task: [metric, ...]}` that enter delta-m; default
            per task kind: accuracy, map (multi-label), miou, map (detection).
        higher_is_better: see `delta_m` (the default knows these names).
        class_names: see `evaluate_tasks`.
        efficiency: add FLOPs/image and inference images/s
            (`efficiency_report`).
        speed_batch_size: batch size of the images/s timing.
        verbose: `fit` verbosity.
        callbacks: `callable(name) -> list of callbacks` for each run.
        print_table: print `Comparison.table()`.
        seed: `keras.utils.set_random_seed` before each model.

    Returns:
        A `Comparison`.
    """
    from keras_mtl.builders import build_mtl, build_single_task
    from keras_mtl.evaluation.efficiency import efficiency_report

    def extra(name):
        return callbacks(name) if callbacks else None

    if multi_task is None:
        keras.utils.set_random_seed(seed)
        model = build_mtl([_fresh(t) for t in tasks], trunk=trunk, weights=weights,
                          input_shape=input_shape, weighting=weighting)
        multi_task = train_and_evaluate(model, train_data, validation_data, epochs,
                                        steps_per_epoch, optimizer, jit_compile, verbose,
                                        extra("multi_task"), class_names, name="multi_task")
    singles = {}
    for task in tasks:
        keras.utils.set_random_seed(seed)
        model = build_single_task(_fresh(task), trunk=trunk, weights=weights,
                                  input_shape=input_shape)
        singles[task.name] = train_and_evaluate(
            model, select_tasks(train_data, [task.name]),
            select_tasks(validation_data, [task.name]), epochs, steps_per_epoch, optimizer,
            jit_compile, verbose, extra(task.name), class_names, name=f"single_{task.name}")

    if delta_metrics is None:
        delta_metrics = {t.name: DEFAULT_DELTA_METRICS[_kind(t)] for t in tasks}
    mtl_values = {t: {m: multi_task.metrics[t][m] for m in ms} for t, ms in delta_metrics.items()}
    single_values = {t: {m: singles[t].metrics[t][m] for m in ms}
                     for t, ms in delta_metrics.items()}
    try:
        per_task = delta_m_per_task(mtl_values, single_values, higher_is_better)
        value = sum(d["delta"] for d in per_task.values()) / len(per_task)
    except ValueError as error:  # e.g. a zero baseline: report, do not crash the run
        print(f"delta-m not defined: {error}")
        per_task, value = {}, math.nan
    report = None
    if efficiency:
        report = efficiency_report(multi_task.model, {t: r.model for t, r in singles.items()},
                                   batch_size=speed_batch_size)
    result = Comparison(multi_task=multi_task, single_task=singles,
                        delta_metrics={t: tuple(m) for t, m in delta_metrics.items()},
                        delta_m=value, delta_per_task=per_task, efficiency=report)
    if print_table:
        print(result.table())
    return result
