"""GradientConflictMonitor: how much the tasks' gradients agree during training."""

import itertools
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_mtl.analysis.task_gradients import check_on, gradient_statistics, preserving_state
from keras_mtl.analysis.task_gradients import task_gradients
from keras_mtl.data.checks import unpack_batch


class GradientConflictMonitor(keras.callbacks.Callback):
    """Logs the pairwise cosine similarity of the tasks' gradients while training.

    Every `interval` training steps it takes one batch (the held `data`
    batch, or the next batch of a `data` dataset), computes each task's
    gradient of its own unweighted loss with respect to the shared
    parameters (`on="parameters"`, the trunk's trainable variables) or the
    shared features (`on="features"`, the trunk's outputs P2..P5 on the
    batch), and records for every pair of tasks (a, b) the cosine
    `<g_a, g_b> / (|g_a| |g_b|)` and for every task its gradient norm
    `|g_t|`. A negative cosine is a conflict: a step on one task's loss
    increases the other's, to first order (Yu et al., "Gradient Surgery for
    Multi-Task Learning", NeurIPS 2020).

    At the end of each epoch it adds to the logs (so `History` and a
    `keras.callbacks.TensorBoard` placed after it get them) the epoch's means:

    - `conflict/<a>_<b>`: mean cosine of the pair;
    - `conflict_fraction/<a>_<b>`: fraction of the measured steps in which
      the pair was in conflict (cosine < 0);
    - `conflict_fraction`: the same over every pair and measured step;
    - `grad_norm/<task>`: mean gradient norm (of the unweighted loss:
      multiply by `weight/<task>` for the weighted one).

    With `log_dir`, every measurement is also written as TensorBoard
    scalars at the global step. `records` keeps every measurement (`step`,
    `epoch`, `cosine` `(T, T)`, `grad_norm` `(T,)`), which
    `keras_mtl.analysis.plot_gradient_conflict` draws.

    A measurement costs about one forward pass and T backward passes (trunk
    included with `on="parameters"`), in a `tf.function` traced once; the
    model is left unchanged (its BatchNorm statistics are restored). Pairs
    with a task that has no labels in the measured batch are left out of
    the means. At least one measurement is made per epoch.

    Args:
        data: the batch to measure on, `(images, targets)` or
            `(images, targets, sample_weights)`, or a `tf.data.Dataset` of
            such batches, of which the first `pool` are read once (at the
            first measurement) and used in turn; or `None` and `set_data`
            before `fit`.
        interval: measure every `interval` training steps.
        on: `"parameters"` or `"features"`.
        log_dir: optional TensorBoard log directory.
        jit_compile: XLA-compile the measurement.
        pool: how many batches of a `data` dataset to keep. (They are read
            once rather than streamed: a second input pipeline running
            beside `fit`'s would compete with it for the CPU.)

    Example:

    ```python
    monitor = GradientConflictMonitor(next(iter(train)), interval=50)
    history = model.fit(train, epochs=3, callbacks=[monitor])
    history.history["conflict/label_mask"], history.history["conflict_fraction"]
    keras_mtl.analysis.plot_gradient_conflict(monitor, "conflict.png")
    ```
    """

    def __init__(self, data=None, interval=50, on="parameters", log_dir=None, jit_compile=False,
                 pool=4):
        super().__init__()
        if int(interval) < 1 or int(pool) < 1:
            raise ValueError(f"interval and pool must be >= 1, got {interval} and {pool}.")
        self.pool = int(pool)
        self.interval = int(interval)
        self.on = check_on(on)
        self.log_dir = log_dir
        self.jit_compile = bool(jit_compile)
        self.records = []
        self._data = None
        self._batches = None
        self._count = 0
        self._function = None
        self._function_model = None
        self._writer = None
        self._step = 0
        self._epoch = 0
        self._last_batch = -1
        self._epoch_records = []
        if data is not None:
            self.set_data(data)

    # --- data ---------------------------------------------------------------------------
    def set_data(self, data):
        """Sets the batch (tuple) or dataset to measure on."""
        if isinstance(data, tf.data.Dataset):
            self._data = data
        else:
            if not isinstance(data, (tuple, list)):
                raise ValueError("data must be a batch (images, targets[, sample_weights]) or a "
                                 f"tf.data.Dataset, got {type(data).__name__}.")
            self._data = tf.nest.map_structure(tf.convert_to_tensor, tuple(data))
        self._batches = None

    def _next_batch(self):
        if self._data is None:
            raise ValueError("GradientConflictMonitor has no data: pass a batch or a dataset to "
                             "its constructor or to set_data().")
        if not isinstance(self._data, tf.data.Dataset):
            return self._data
        if self._batches is None:
            self._batches = [tuple(batch) for batch in self._data.take(self.pool)]
            if not self._batches:
                raise ValueError("GradientConflictMonitor's dataset is empty.")
        self._count += 1
        return self._batches[(self._count - 1) % len(self._batches)]

    # --- measurement ----------------------------------------------------------------------
    @property
    def task_names(self):
        return list(self.model.task_names)

    @property
    def pairs(self):
        """The task pairs `(a, b)`, a before b in task order."""
        return list(itertools.combinations(range(len(self.model.tasks)), 2))

    def _graph(self, images, targets, sample_weights):
        model = self._function_model

        def measure():
            grads, _, present, _ = task_gradients(model, images, targets, sample_weights, self.on)
            return gradient_statistics(grads, present)

        return preserving_state(model, measure)

    def measure(self, batch=None):
        """Measures once; returns `{"cosine": (T, T), "grad_norm": (T,)}` as numpy.

        Args:
            batch: a batch to measure on; default the monitor's data.
        """
        if self._function is None or self._function_model is not self.model:
            self._function_model = self.model
            self._function = tf.function(self._graph, jit_compile=self.jit_compile,
                                         reduce_retracing=True)
        batch = self._next_batch() if batch is None else batch
        images, targets, sample_weights = unpack_batch(tuple(batch), self.model.task_names)
        cosine, norms = self._function(images, targets, sample_weights)
        return {"cosine": np.asarray(cosine), "grad_norm": np.asarray(norms)}

    def _record(self):
        result = self.measure()
        record = {"step": self._step, "epoch": self._epoch, **result}
        self.records.append(record)
        self._epoch_records.append(record)
        if self._writer is not None:
            with self._writer.as_default(step=self._step):
                for name, value in self._scalars([record]).items():
                    if np.isfinite(value):
                        _write_scalar(name, value, self._step)
        return record

    def _scalars(self, records):
        """The logged scalars of a list of measurements (means over them)."""
        names = self.task_names
        cosines = np.stack([r["cosine"] for r in records])  # (N, T, T)
        norms = np.stack([r["grad_norm"] for r in records])  # (N, T)
        logs, conflicts = {}, []
        for a, b in self.pairs:
            values = cosines[:, a, b]
            values = values[np.isfinite(values)]
            key = f"{names[a]}_{names[b]}"
            logs[f"conflict/{key}"] = float(values.mean()) if values.size else float("nan")
            logs[f"conflict_fraction/{key}"] = (float((values < 0).mean()) if values.size
                                                else float("nan"))
            conflicts.extend((values < 0).tolist())
        logs["conflict_fraction"] = float(np.mean(conflicts)) if conflicts else float("nan")
        for index, name in enumerate(names):
            values = norms[:, index]
            values = values[np.isfinite(values)]
            logs[f"grad_norm/{name}"] = float(values.mean()) if values.size else float("nan")
        return logs

    def summary(self):
        """Means over every measurement so far.

        Returns:
            `{"cosine": (T, T), "grad_norm": (T,), "conflict_fraction": float}`
            (NaN where never measured).
        """
        if not self.records:
            raise ValueError("No measurement yet: fit with the monitor, or call measure().")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN pairs
            cosine = np.nanmean(np.stack([r["cosine"] for r in self.records]), axis=0)
            grad_norm = np.nanmean(np.stack([r["grad_norm"] for r in self.records]), axis=0)
        return {"cosine": cosine, "grad_norm": grad_norm,
                "conflict_fraction": self._scalars(self.records)["conflict_fraction"]}

    # --- callback hooks ---------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        if self._data is None:
            self._next_batch()  # raises the readable error now, not mid-epoch
        if self.log_dir is not None and self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_records = []
        self._last_batch = -1

    def on_train_batch_end(self, batch, logs=None):
        done = max(batch - self._last_batch, 1)  # steps_per_execution > 1 reports every k steps
        self._last_batch = batch
        previous, self._step = self._step, self._step + done
        if (self._step - 1) // self.interval > (previous - 1) // self.interval:
            self._record()  # steps 1, 1 + interval, 1 + 2 interval, ...

    def on_epoch_end(self, epoch, logs=None):
        if not self._epoch_records:
            self._record()
        if logs is not None:
            logs.update(self._scalars(self._epoch_records))

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()


def _write_scalar(name, value, step):
    """`tf.summary.scalar` without the `tensorboard` package: the same record
    (plugin "scalars", data class scalar) written with the core `tf.summary.write`."""
    metadata = tf.compat.v1.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    metadata.data_class = 1  # DATA_CLASS_SCALAR
    tf.summary.write(name, tf.constant(float(value), tf.float32), step=step,
                     metadata=metadata.SerializeToString())
