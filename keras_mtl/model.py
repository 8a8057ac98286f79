"""MultiTaskModel: one Functional Keras model, several tasks, one train step."""

import contextlib
import math

import keras
import tensorflow as tf
from keras import ops

from keras_mtl import architectures as architectures_lib
from keras_mtl import compat, distribute
from keras_mtl import weighting as weighting_lib
from keras_mtl.architectures.head_seeds import head_seed_scope
from keras_mtl.data.checks import check_batch, readable_check_error, unpack_batch
from keras_mtl.registry import keras_serializable
from keras_mtl.training import controls as controls_lib
from keras_mtl.training import losses as losses_lib
from keras_mtl.training import steps as steps_lib
from keras_mtl.training.forward import FeatureSplit


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
class MultiTaskModel(compat.FirstReplicaSymbolicBuild, keras.Model):
    """A shared trunk with one named head per task, trained jointly.

    Built with the Functional API: `call()` maps raw images `(B, H, W, 3)`
    to a dict of raw head outputs keyed by task name. `fit` runs a custom
    `train_step` that computes each task's loss on the labelled part of the
    batch, combines them with the `weighting`, and logs `loss`,
    `<task>_loss`, each task's metrics and `weight/<task>`. `predict` and
    `export` return decoded outputs (probabilities, class maps, boxes).

    The `architecture` wires trunk and heads (hard parameter sharing by
    default; see `keras_mtl.architectures`) and says what the tasks share:
    `shared_variables` and `shared_features`, what gradient-based
    weightings balance.

    Most users build it with `keras_mtl.build_mtl`.

    Args:
        trunk: a trunk `keras.Model` from raw pixels to `{"P2", ..., "P5"}`
            (see `keras_mtl.trunks.get`).
        tasks: list of `keras_mtl.tasks.Task`, with distinct names.
        weighting: a weighting identifier (see `keras_mtl.weighting.get`).
        architecture: an architecture identifier (see
            `keras_mtl.architectures.get`): `"hps"` (default), `"mtan"`,
            `"cross_stitch"`, `"cascade"`, `"adapters"`, `"separate"`, or
            an `Architecture` instance.
        sync_batch_norm: when the model is built inside a `tf.distribute`
            strategy with more than one replica, every `BatchNormalization`
            layer (trunk and heads) normalises with the statistics of the
            global batch (`keras_mtl.distribute.synchronize_batch_norm`), so
            training matches one device. `False` keeps per-replica statistics.
        **kwargs: passed to `keras.Model` (`name`, ...).

    Example:

    >>> trunk = keras_mtl.trunks.get("micro_resnet", input_shape=(32, 32, 3))
    >>> model = MultiTaskModel(trunk, [Classification("c", 2), Segmentation("s", 3)])
    >>> model.compile(optimizer="adam")
    >>> sorted(model.predict(np.zeros((1, 32, 32, 3)), verbose=0))
    ['c', 's']
    """

    def __init__(self, trunk, tasks, weighting="equal", architecture="hps", sync_batch_norm=True,
                 **kwargs):
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
        self.architecture = architectures_lib.get(architecture)

        # === Functional model ===
        images = keras.Input(shape=image_shape, name="images")
        with head_seed_scope():  # a head's initial weights do not depend on the other tasks
            outputs, self._shared_parts = self.architecture.build(images, trunk, tasks,
                                                                  image_shape)
        if self.weighting.gradient_based:  # state sized by the shared parameters (DB-MTL)
            self.weighting.build_gradient_state(
                sum(int(math.prod(v.shape)) for v in self._shared_parts.variables()))
        super().__init__(inputs=images, outputs=outputs, **kwargs)
        self.sync_batch_norm = bool(sync_batch_norm)
        if self.sync_batch_norm and tf.distribute.get_strategy().num_replicas_in_sync > 1:
            distribute.synchronize_batch_norm(self)

        # === Metrics ===
        self.image_shape = image_shape
        self.task_names = names
        self.total_loss_tracker = keras.metrics.Mean(name="loss")
        self.task_loss_trackers = [keras.metrics.Mean(name=f"{name}_loss") for name in names]
        self.task_metrics = [task.build_metrics() for task in tasks]
        # Caches of the steps, per model.
        self.per_replica_xla = distribute.PerReplicaXLA()
        self._feature_split = None

    # --- what the tasks share ------------------------------------------------------
    @property
    def shared_variables(self):
        """The trainable variables that every task's loss reaches (the
        architecture's shared parameters: the trunk's for hard sharing, none
        for `separate`). Gradient-based weightings balance their gradients."""
        return self._shared_parts.variables()

    @property
    def shared_features(self):
        """The architecture's shared features: symbolic tensors of the graph
        (the trunk's P2..P5 for hard sharing; `[]` where there are none),
        used by gradient-based weightings with `rep_grad=True`."""
        return list(self._shared_parts.features)

    @property
    def feature_split(self):
        """The model's forward pass cut at `shared_features` (a `FeatureSplit`)."""
        if self._feature_split is None:
            self._feature_split = FeatureSplit(self)
        return self._feature_split

    # --- steps -------------------------------------------------------------------
    @property
    def metrics(self):
        metrics = [self.total_loss_tracker, *self.task_loss_trackers]
        for task_metrics in self.task_metrics:
            metrics.extend(task_metrics)
        return metrics

    def task_losses(self, targets, outputs, sample_weights):
        """Per-task losses `(T,)` and presence `(T,)` (1.0 where labelled).

        A task absent from `targets` has loss 0 and presence 0. Under a
        `tf.distribute` strategy with R > 1 replicas the losses are those of
        the global batch (see `keras_mtl.training.losses`).
        """
        return losses_lib.task_losses(self.tasks, targets, outputs, sample_weights)

    def update_metrics(self, result, targets, sample_weights, log_weights=True):
        """Updates the loss trackers and task metrics from a `StepResult`; the logs."""
        self.total_loss_tracker.update_state(result.total)
        for index, task in enumerate(self.tasks):
            if task.name not in targets:
                continue
            # A batch without labels for the task does not pull its mean loss to 0.
            self.task_loss_trackers[index].update_state(
                result.losses[index], sample_weight=result.present[index])
            task.update_metrics(self.task_metrics[index], targets[task.name],
                                result.outputs[task.name], sample_weights.get(task.name))
        logs = self._metric_results()
        if log_weights:
            weights = self.weighting.current_weights()
            for index, name in enumerate(self.task_names):
                logs[f"weight/{name}"] = weights[index]
        if distribute.is_multi_worker(self.distribute_strategy):
            # Keras reduces a multi-worker step's logs with a mean along axis 0, which
            # fails on scalars; the logs are the global values on every replica
            # already, so each gets a leading axis of 1 that the mean takes away.
            logs = {name: ops.expand_dims(value, 0) for name, value in logs.items()}
        return logs

    def _metric_results(self):
        """`{name: result}` of every metric, over all replicas.

        In a replica context `metric.result()` reads this replica's own
        variables (Keras metrics sum their variables across replicas only
        when read in cross-replica context), so the step's logs, and the
        epoch's logs `fit` keeps, would be a mean of per-replica ratios.
        Under R > 1 replicas the metrics' variables are all-reduced (one
        `all_reduce`) and the results computed from the sums: the one-device
        values.
        """
        context = distribute.replica_context()
        if context is None:
            return {metric.name: metric.result() for metric in self.metrics}
        # Copies on the replica's device: MultiWorkerMirroredStrategy all-reduces only
        # tensors with a device, and a metric variable's read has none.
        local = [[tf.identity(v) for v in metric.variables] for metric in self.metrics]
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
        return {metric.name: metric.stateless_result(values)
                for metric, values in zip(self.metrics, summed)}

    def make_train_function(self, force=False):
        with self.per_replica_xla.step_function_without_xla(self):
            return super().make_train_function(force)

    def make_test_function(self, force=False):
        with self.per_replica_xla.step_function_without_xla(self):
            return super().make_test_function(force)

    def train_step(self, data):
        images, targets, sample_weights = unpack_batch(data, self.task_names)
        step = steps_lib.select_step(self)  # loss, clipped loss or gradient-balanced step
        result = step(self, images, targets, sample_weights)
        return self.update_metrics(result, targets, sample_weights)

    def test_step(self, data):
        images, targets, sample_weights = unpack_batch(data, self.task_names)
        outputs, losses, present = steps_lib.forward_and_losses(
            self, images, targets, sample_weights, training=False)
        if self.weighting.gradient_based:
            total = ops.sum(losses * present * self.weighting.current_weights())
        else:
            total = self.weighting(losses, present, training=False)
        result = steps_lib.StepResult(total, losses, present, outputs)
        return self.update_metrics(result, targets, sample_weights, log_weights=False)

    def predict_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        return self.decode(self(images, training=False))

    def decode(self, outputs):
        """Raw head outputs -> the decoded, named outputs of every task."""
        decoded = {}
        for task in self.tasks:
            decoded.update(task.decode(outputs[task.name]))
        return decoded

    # --- compile -------------------------------------------------------------------
    training_controls = None  # set by compile
    trunk_optimizer = None

    def compile(self, optimizer="rmsprop", *args, trunk_optimizer=None, freeze_trunk_epochs=0,
                task_schedule=None, clip_task_gradients=None, **kwargs):
        """`keras.Model.compile` plus the training controls of the tasks and the trunk.

        Args:
            optimizer: the optimizer of the heads (and of the trunk when
                `trunk_optimizer` is None).
            trunk_optimizer: optional optimizer of the trunk's variables, with
                its own learning rate and schedule (see
                `keras_mtl.training.trunk_learning_rate`); saved with
                the model.
            freeze_trunk_epochs: the trunk is not updated in the first N epochs.
            task_schedule: `{task: (start_epoch, end_epoch)}` or `{task: start}`:
                epochs in which the task's loss is on (end exclusive, None = open).
            clip_task_gradients: `{task: max_norm}` or one float: per-task
                gradient clipping (see `keras_mtl.training.controls`).
            *args, **kwargs: passed to `keras.Model.compile` (`jit_compile`, ...).
        """
        super().compile(optimizer, *args, **kwargs)
        controls = controls_lib.compile_controls(self, trunk_optimizer, freeze_trunk_epochs,
                                                 task_schedule, clip_task_gradients)
        self.training_controls = controls
        self.trunk_optimizer = controls.trunk_optimizer

    def get_compile_config(self):
        """Keras' compile config plus the training controls (saved in `.keras` files)."""
        config = super().get_compile_config()
        if config and self.training_controls is not None:
            config = dict(config)
            config.update(keras.saving.serialize_keras_object(
                self.training_controls.get_config()))
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.optimizer is not None and not self.optimizer.built and self.built:
            self.optimizer.build(self.trainable_variables)  # its state is loaded next

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
        kwargs["callbacks"] = controls_lib.fit_callbacks(self, kwargs.get("callbacks"))
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
        """Writes a SavedModel (or, with `format="onnx"`, an ONNX file) that
        serves decoded outputs.

        See `keras_mtl.export.export_saved_model` and
        `keras_mtl.onnx.export_onnx`; other formats go to `keras.Model.export`.
        """
        if format == "onnx":
            from keras_mtl.onnx import export_onnx

            return export_onnx(self, filepath, verbose=verbose, **kwargs)
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
            "architecture": keras.saving.serialize_keras_object(self.architecture),
            "sync_batch_norm": self.sync_batch_norm,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        trunk = keras.saving.deserialize_keras_object(config.pop("trunk"), custom_objects)
        tasks = [keras.saving.deserialize_keras_object(t, custom_objects) for t in config.pop("tasks")]
        weighting = keras.saving.deserialize_keras_object(config.pop("weighting"), custom_objects)
        architecture = config.pop("architecture", None)
        if isinstance(architecture, dict):
            architecture = keras.saving.deserialize_keras_object(architecture, custom_objects)
        return cls(trunk=trunk, tasks=tasks, weighting=weighting, architecture=architecture,
                   **config)

