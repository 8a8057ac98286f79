"""MultiTaskModel: one Functional Keras model, several tasks, one train step."""

import contextlib

import keras
import tensorflow as tf
from keras import ops

from keras_mtl import weighting as weighting_lib
from keras_mtl.data.checks import check_batch, readable_check_error, unpack_batch
from keras_mtl.tasks.task import keras_serializable


@contextlib.contextmanager
def _readable_data_errors():
    """Re-raises a failed data check from inside tf.data as a clear ValueError."""
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        readable = readable_check_error(error)
        if readable is None:
            raise
        raise readable from error


@keras_serializable
class MultiTaskModel(keras.Model):
    """A shared trunk with one named head per task, trained jointly.

    Built with the Functional API: `call()` maps raw images `(B, H, W, 3)`
    to a dict of raw head outputs keyed by task name. `fit` runs a custom
    `train_step` that computes each task's loss on the labelled part of the
    batch, combines them with the `weighting`, and logs `loss`,
    `<task>_loss`, each task's metrics and `weight/<task>`. `predict` and
    `export` return decoded outputs (probabilities, class maps, boxes).

    Most users build it with `keras_mtl.build_mtl`.

    Args:
        trunk: a trunk `keras.Model` from raw pixels to `{"P2", ..., "P5"}`
            (see `keras_mtl.trunks.get`).
        tasks: list of `keras_mtl.tasks.Task`, with distinct names.
        weighting: a weighting identifier (see `keras_mtl.weighting.get`).
        **kwargs: passed to `keras.Model` (`name`, ...).

    Example:

    >>> trunk = keras_mtl.trunks.get("micro_resnet", input_shape=(32, 32, 3))
    >>> model = MultiTaskModel(trunk, [Classification("c", 2), Segmentation("s", 3)])
    >>> model.compile(optimizer="adam")
    >>> sorted(model.predict(np.zeros((1, 32, 32, 3)), verbose=0))
    ['c', 's']
    """

    def __init__(self, trunk, tasks, weighting="equal", **kwargs):
        tasks = list(tasks)
        names = [task.name for task in tasks]
        if not tasks:
            raise ValueError("A MultiTaskModel needs at least one task.")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"Task names must be distinct; repeated: {duplicates}.")
        image_shape = tuple(trunk.inputs[0].shape[1:])
        if any(size is None or size % 32 for size in image_shape[:2]):
            raise ValueError(
                f"The input height and width must be multiples of 32 (the trunk's P5 stride), "
                f"got input_shape {image_shape}."
            )

        # === Layers (tracked before the Functional graph is made) ===
        self.trunk = trunk
        self.tasks = tasks
        self.weighting = weighting_lib.get(weighting)
        self.weighting.set_tasks(tasks)

        # === Functional model ===
        images = keras.Input(shape=image_shape, name="images")
        features = trunk(images)
        outputs = {task.name: task.build_head(features, image_shape) for task in tasks}
        super().__init__(inputs=images, outputs=outputs, **kwargs)

        # === Metrics ===
        self.image_shape = image_shape
        self.task_names = names
        self.total_loss_tracker = keras.metrics.Mean(name="loss")
        self.task_loss_trackers = [keras.metrics.Mean(name=f"{name}_loss") for name in names]
        self.task_metrics = [task.build_metrics() for task in tasks]

    # --- steps -------------------------------------------------------------------
    @property
    def metrics(self):
        metrics = [self.total_loss_tracker, *self.task_loss_trackers]
        for task_metrics in self.task_metrics:
            metrics.extend(task_metrics)
        return metrics

    def task_losses(self, targets, outputs, sample_weights):
        """Per-task mean losses `(T,)` and presence `(T,)` (1.0 where labelled).

        A task absent from `targets` has loss 0 and presence 0.
        """
        losses, present = [], []
        for task in self.tasks:
            if task.name not in targets:
                losses.append(ops.zeros((), "float32"))
                present.append(ops.zeros((), "float32"))
                continue
            loss, count = task.compute_loss(
                targets[task.name], outputs[task.name], sample_weights.get(task.name)
            )
            losses.append(loss)
            present.append(ops.cast(count > 0, "float32"))
        return ops.stack(losses), ops.stack(present)

    def _update_metrics(self, total, losses, present, targets, outputs, sample_weights,
                        log_weights=True):
        self.total_loss_tracker.update_state(total)
        for index, task in enumerate(self.tasks):
            if task.name not in targets:
                continue
            # A batch without labels for the task does not pull its mean loss to 0.
            self.task_loss_trackers[index].update_state(losses[index], sample_weight=present[index])
            task.update_metrics(
                self.task_metrics[index], targets[task.name], outputs[task.name],
                sample_weights.get(task.name),
            )
        logs = {metric.name: metric.result() for metric in self.metrics}
        if not log_weights:
            return logs
        weights = self.weighting.current_weights()
        for index, name in enumerate(self.task_names):
            logs[f"weight/{name}"] = weights[index]
        return logs

    def train_step(self, data):
        images, targets, sample_weights = unpack_batch(data, self.task_names)
        if self.weighting.gradient_based:
            from keras_mtl.gradient_step import gradient_balanced_step

            return gradient_balanced_step(self, images, targets, sample_weights)
        with tf.GradientTape() as tape:
            outputs = self(images, training=True)
            losses, present = self.task_losses(targets, outputs, sample_weights)  # (T,), (T,)
            total = self.weighting(losses, present, training=True)
            if self.losses:
                total = total + ops.cast(ops.sum(self.losses), "float32")
            scaled = self.optimizer.scale_loss(total)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        # Heads of tasks absent from this batch have no gradient: leave them untouched.
        pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        return self._update_metrics(total, losses, present, targets, outputs, sample_weights)

    def test_step(self, data):
        images, targets, sample_weights = unpack_batch(data, self.task_names)
        outputs = self(images, training=False)
        losses, present = self.task_losses(targets, outputs, sample_weights)
        if self.weighting.gradient_based:
            total = ops.sum(losses * present * self.weighting.current_weights())
        else:
            total = self.weighting(losses, present, training=False)
        return self._update_metrics(total, losses, present, targets, outputs, sample_weights,
                                    log_weights=False)

    def predict_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        return self.decode(self(images, training=False))

    def decode(self, outputs):
        """Raw head outputs -> the decoded, named outputs of every task."""
        decoded = {}
        for task in self.tasks:
            decoded.update(task.decode(outputs[task.name]))
        return decoded

    # --- input checks --------------------------------------------------------------
    def check_dataset(self, dataset):
        """Returns `dataset` with every batch checked against the tasks.

        Static problems (unknown task key, wrong rank or size, wrong dtype)
        raise a `ValueError` at once; value problems (class id out of range,
        NaN or infinite pixels) fail with the task's name when the batch is
        read. `fit`, `evaluate` call it for `tf.data.Dataset` inputs.
        """
        return dataset.map(
            lambda *batch: check_batch(batch, self.tasks, self.image_shape),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    def _checked(self, x, y=None, sample_weight=None):
        if isinstance(x, tf.data.Dataset):
            return self.check_dataset(x), y, sample_weight
        if y is not None:
            batch = (x, y) if sample_weight is None else (x, y, sample_weight)
            check_batch(batch, self.tasks, self.image_shape)  # eager: raises at once
        return x, y, sample_weight

    def fit(self, x=None, y=None, *args, validation_data=None, sample_weight=None, **kwargs):
        if isinstance(x, tf.data.Dataset):
            kwargs.setdefault("shuffle", False)  # a Dataset shuffles itself; avoids a warning
        x, y, sample_weight = self._checked(x, y, sample_weight)
        if isinstance(validation_data, tf.data.Dataset):
            validation_data = self.check_dataset(validation_data)
        with _readable_data_errors():
            return super().fit(x, y, *args, validation_data=validation_data,
                               sample_weight=sample_weight, **kwargs)

    def evaluate(self, x=None, y=None, *args, sample_weight=None, **kwargs):
        x, y, sample_weight = self._checked(x, y, sample_weight)
        with _readable_data_errors():
            return super().evaluate(x, y, *args, sample_weight=sample_weight, **kwargs)

    # --- export ------------------------------------------------------------------------
    def export(self, filepath, format="tf_saved_model", verbose=True, **kwargs):
        """Writes a SavedModel that serves decoded outputs.

        See `keras_mtl.export.export_saved_model`; other formats go to
        `keras.Model.export`.
        """
        if format != "tf_saved_model":
            return super().export(filepath, format=format, verbose=verbose, **kwargs)
        from keras_mtl.export import export_saved_model

        return export_saved_model(self, filepath, verbose=verbose, **kwargs)

    # --- serialisation -------------------------------------------------------------
    def get_config(self):
        return {
            "name": self.name,
            "trunk": keras.saving.serialize_keras_object(self.trunk),
            "tasks": [keras.saving.serialize_keras_object(task) for task in self.tasks],
            "weighting": keras.saving.serialize_keras_object(self.weighting),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        trunk = keras.saving.deserialize_keras_object(config.pop("trunk"), custom_objects)
        tasks = [keras.saving.deserialize_keras_object(t, custom_objects) for t in config.pop("tasks")]
        weighting = keras.saving.deserialize_keras_object(config.pop("weighting"), custom_objects)
        return cls(trunk=trunk, tasks=tasks, weighting=weighting, **config)

