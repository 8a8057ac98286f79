"""MultiTaskModel: one Functional Keras model, several tasks, one train step."""

import contextlib
import math
import weakref

import keras
import tensorflow as tf
from keras import ops

from keras_mtl import architectures as architectures_lib
from keras_mtl import training_controls as controls_lib
from keras_mtl import weighting as weighting_lib
from keras_mtl.data.checks import check_batch, readable_check_error, unpack_batch
from keras_mtl.tasks.task import keras_serializable


_REPLICA_FUNCTIONS = weakref.WeakKeyDictionary()  # model -> {key: XLA tf.function}


def replica_context():
    """The replica context of a `tf.distribute` step with more than one replica, else `None`.

    `None` on one device, in cross-replica context, and under a strategy
    with a single replica: there the train step runs exactly as without a
    strategy.
    """
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def scale_for_replicas(value):
    """`value / R` under `R` > 1 replicas (Keras' `scale_loss_for_distribution`).

    The optimizer sums the gradients of the replicas; dividing each
    replica's objective by R makes that sum the one-device gradient.
    """
    context = replica_context()
    if context is None:
        return value
    return value * (1.0 / context.num_replicas_in_sync)


def task_loss_parts(task, y_true, y_pred, sample_weight):
    """`(loss_sum, normaliser, count)` of one task on this replica's batch.

    The task's mean loss is `loss_sum / normaliser`; `count` is the number
    of labelled elements (presence). A task can define
    `compute_loss_sum(y_true, y_pred, sample_weight)` returning these three
    when its loss is not a mean over `count` labelled elements (e.g. a
    detection loss normalised by the number of boxes); otherwise they come
    from `compute_loss`: `(mean * count, count, count)`, exact for the losses
    that are a (weighted) mean over labelled elements. A loss that is not a
    sum over elements (a soft Dice term over the batch) becomes the
    count-weighted average of the replicas' values: close to, not exactly,
    the one-device loss.
    """
    if hasattr(task, "compute_loss_sum"):
        loss_sum, normaliser, count = task.compute_loss_sum(y_true, y_pred, sample_weight)
        return (ops.cast(loss_sum, "float32"), ops.cast(normaliser, "float32"),
                ops.cast(count, "float32"))
    loss, count = task.compute_loss(y_true, y_pred, sample_weight)
    count = ops.cast(count, "float32")
    return ops.cast(loss, "float32") * count, count, count


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


def _is_multi_worker(strategy):
    """True under a `MultiWorkerMirroredStrategy` with more than one worker."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    resolver = strategy.cluster_resolver
    return resolver is not None and len(resolver.cluster_spec().as_dict().get("worker", [])) > 1


@keras_serializable
class MultiTaskModel(keras.Model):
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
        **kwargs: passed to `keras.Model` (`name`, ...).

    Example:

    >>> trunk = keras_mtl.trunks.get("micro_resnet", input_shape=(32, 32, 3))
    >>> model = MultiTaskModel(trunk, [Classification("c", 2), Segmentation("s", 3)])
    >>> model.compile(optimizer="adam")
    >>> sorted(model.predict(np.zeros((1, 32, 32, 3)), verbose=0))
    ['c', 's']
    """

    def __init__(self, trunk, tasks, weighting="equal", architecture="hps", **kwargs):
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
        outputs, self._shared_parts = self.architecture.build(images, trunk, tasks, image_shape)
        if self.weighting.gradient_based:  # state sized by the shared parameters (DB-MTL)
            self.weighting.build_gradient_state(
                sum(int(math.prod(v.shape)) for v in self._shared_parts.variables()))
        super().__init__(inputs=images, outputs=outputs, **kwargs)

        # === Metrics ===
        self.image_shape = image_shape
        self.task_names = names
        self.total_loss_tracker = keras.metrics.Mean(name="loss")
        self.task_loss_trackers = [keras.metrics.Mean(name=f"{name}_loss") for name in names]
        self.task_metrics = [task.build_metrics() for task in tasks]

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

    # --- steps -------------------------------------------------------------------
    @property
    def metrics(self):
        metrics = [self.total_loss_tracker, *self.task_loss_trackers]
        for task_metrics in self.task_metrics:
            metrics.extend(task_metrics)
        return metrics

    def task_losses(self, targets, outputs, sample_weights):
        """Per-task losses `(T,)` and presence `(T,)` (1.0 where labelled).

        A task absent from `targets` has loss 0 and presence 0.

        On one device a task's loss is its mean over the batch's labelled
        elements (`task.compute_loss`). Under a `tf.distribute` strategy with
        R > 1 replicas it is the mean over the labelled elements of the
        *global* batch, the one-device value (see `global_task_losses`).
        """
        context = replica_context()
        if context is not None:
            return self.global_task_losses(self.local_loss_parts(targets, outputs, sample_weights))
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

    def local_loss_parts(self, targets, outputs, sample_weights):
        """`(T, 3)` float32: each task's `(loss_sum, normaliser, count)` on this
        replica's batch (zeros for a task absent from `targets`); see
        `task_loss_parts`."""
        zero = ops.zeros((), "float32")
        parts = []
        for task in self.tasks:
            if task.name not in targets:
                parts.append((zero, zero, zero))
                continue
            parts.append(task_loss_parts(task, targets[task.name], outputs[task.name],
                                         sample_weights.get(task.name)))
        return ops.stack([ops.stack(part) for part in parts])  # (T, 3)

    def global_task_losses(self, parts):
        """The global batch's losses `(T,)` and presence `(T,)` from every
        replica's `local_loss_parts` `(T, 3)` (in a replica context).

        The replicas' loss sums, normalisers and label counts are all-reduced
        (one `all_reduce` for all tasks), so every replica gets the same
        losses and presence, equal to the one-device ones, and the
        weighting's state (loss histories, logits, moving averages) is
        updated identically on all replicas. The returned losses' value is
        the global mean `L_t = sum_r S_rt / N_t` and their gradient is `R`
        times the gradient of this replica's share `S_rt / N_t`
        (`stop_gradient(L - R share) + R share`): the step divides its
        objective by R (`scale_for_replicas`) and the optimizer sums the
        replicas' gradients, which gives the one-device gradient for any
        weighting, linear or not in the losses, and for the weighting's own
        variables. Outside a replica context with R > 1, returns the
        one-replica values.
        """
        context = replica_context()
        parts = ops.cast(parts, "float32")  # (T, 3)
        if context is None:
            total, replicas = tf.stop_gradient(parts), 1.0
        else:
            total = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(parts))
            replicas = float(context.num_replicas_in_sync)
        normaliser = ops.where(total[:, 1] > 0, total[:, 1], 1.0)  # (T,) global
        global_loss = total[:, 0] / normaliser  # (T,) the one-device loss
        share = replicas * parts[:, 0] / normaliser  # (T,) R x this replica's share
        losses = tf.stop_gradient(global_loss - share) + share
        present = ops.cast(total[:, 2] > 0, "float32")  # (T,)
        return losses, present

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
        logs = self._metric_results()
        if log_weights:
            weights = self.weighting.current_weights()
            for index, name in enumerate(self.task_names):
                logs[f"weight/{name}"] = weights[index]
        if _is_multi_worker(self.distribute_strategy):
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
        context = replica_context()
        if context is None:
            return {metric.name: metric.result() for metric in self.metrics}
        # Copies on the replica's device: MultiWorkerMirroredStrategy all-reduces only
        # tensors with a device, and a metric variable's read has none.
        local = [[tf.identity(v) for v in metric.variables] for metric in self.metrics]
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
        return {metric.name: metric.stateless_result(values)
                for metric, values in zip(self.metrics, summed)}

    def compiled_per_replica(self, key, fn):
        """`fn`, compiled with XLA per replica when needed.

        Keras compiles the whole step function with XLA when
        `jit_compile=True`, which fails under a multi-device strategy (the
        compiled function would span the devices' variables, keras#19005),
        and its `jit_compile="auto"` turns XLA off there. So under a
        strategy with more than one replica and `jit_compile=True`, the step
        function is built without XLA and the step compiles its heavy,
        replica-local parts (forward pass and, through the tape, its backward
        pass) itself, leaving the cross-replica all-reduces and the
        optimizer update outside XLA. `key` names the cached function.
        Elsewhere, returns `fn` itself.
        """
        if not getattr(self, "_jit_per_replica", False):
            return fn
        functions = _REPLICA_FUNCTIONS.setdefault(self, {})
        if key not in functions:
            functions[key] = tf.function(fn, jit_compile=True, reduce_retracing=True)
        return functions[key]

    @contextlib.contextmanager
    def _replica_jit(self):
        per_replica = bool(self.jit_compile and not self.run_eagerly
                           and self.distribute_strategy.num_replicas_in_sync > 1)
        self._jit_per_replica = per_replica
        if not per_replica:
            yield
            return
        self._jit_compile = False  # Keras' step function: no XLA around the replicas
        try:
            yield
        finally:
            self._jit_compile = True

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras' TensorFlow trainer reads the first distributed batch and
        # reduces the whole (images, targets) nest with `strategy.reduce`, which
        # MultiWorkerMirroredStrategy rejects (it reduces one tensor, not a nest).
        # Only the batch's shapes and dtypes are used: one replica's batch does.
        if iterator is not None and self.distribute_strategy.num_replicas_in_sync > 1:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda value: (value.values[0]
                                   if isinstance(value, tf.distribute.DistributedValues)
                                   else value), next(batches))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def make_train_function(self, force=False):
        with self._replica_jit():
            return super().make_train_function(force)

    def make_test_function(self, force=False):
        with self._replica_jit():
            return super().make_test_function(force)

    def _outputs_and_losses(self, images, targets, sample_weights, training):
        """Forward pass, then `(outputs, losses (T,), present (T,))`."""
        if replica_context() is None:
            outputs = self(images, training=training)
            return (outputs, *self.task_losses(targets, outputs, sample_weights))

        def local(images, targets, sample_weights):
            outputs = self(images, training=training)
            return outputs, self.local_loss_parts(targets, outputs, sample_weights)

        outputs, parts = self.compiled_per_replica(f"step_{training}", local)(images, targets, sample_weights)
        return (outputs, *self.global_task_losses(parts))

    def train_step(self, data):
        images, targets, sample_weights = unpack_batch(data, self.task_names)
        if self.weighting.gradient_based:
            from keras_mtl.gradient_step import gradient_balanced_step

            return gradient_balanced_step(self, images, targets, sample_weights)
        if self.training_controls is not None and self.training_controls.clips:
            return controls_lib.clipped_loss_step(self, images, targets, sample_weights)
        with tf.GradientTape() as tape:
            outputs, losses, present = self._outputs_and_losses(
                images, targets, sample_weights, training=True)  # (T,), (T,)
            # Tasks switched off by the curriculum count as unlabelled (compile's task_schedule).
            total = self.weighting(losses, present * controls_lib.task_mask(self), training=True)
            if self.losses:
                total = total + ops.cast(ops.sum(self.losses), "float32")
            # Under R > 1 replicas: / R, the optimizer sums the replicas' gradients.
            scaled = self.optimizer.scale_loss(scale_for_replicas(total))
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        # Heads of tasks absent from this batch have no gradient: leave them untouched.
        controls_lib.apply_gradients(self, gradients, variables)  # trunk optimizer, freezing
        return self._update_metrics(total, losses, present, targets, outputs, sample_weights)

    def test_step(self, data):
        images, targets, sample_weights = unpack_batch(data, self.task_names)
        outputs, losses, present = self._outputs_and_losses(
            images, targets, sample_weights, training=False)
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
                `keras_mtl.training_controls.trunk_learning_rate`); saved with
                the model.
            freeze_trunk_epochs: the trunk is not updated in the first N epochs.
            task_schedule: `{task: (start_epoch, end_epoch)}` or `{task: start}`:
                epochs in which the task's loss is on (end exclusive, None = open).
            clip_task_gradients: `{task: max_norm}` or one float: per-task
                gradient clipping (see `keras_mtl.training_controls`).
            *args, **kwargs: passed to `keras.Model.compile` (`jit_compile`, ...).
        """
        super().compile(optimizer, *args, **kwargs)
        controls_lib.compile_controls(self, trunk_optimizer, freeze_trunk_epochs,
                                      task_schedule, clip_task_gradients)

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
            "architecture": keras.saving.serialize_keras_object(self.architecture),
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

