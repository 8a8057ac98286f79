"""Training controls of a `MultiTaskModel`: a trunk optimizer, trunk freezing,
task curricula and per-task gradient clipping (TensorFlow only).

They are `compile` arguments of `keras_mtl.MultiTaskModel`:

```python
model.compile(
    optimizer=keras.optimizers.AdamW(1e-3),          # the heads (and weighting)
    trunk_optimizer=keras.optimizers.AdamW(1e-4),    # the shared trunk, own schedule
    freeze_trunk_epochs=2,                           # trunk untouched in epochs 0 and 1
    task_schedule={"objects": (3, None)},            # detection loss on from epoch 3
    clip_task_gradients={"mask": 1.0},               # clip the segmentation gradient
)
```

- `trunk_optimizer`: the trunk's trainable variables are updated by this
  optimizer, every other trainable variable (heads, learned loss weights) by
  `optimizer`. Each keeps its own state and schedule (the trunk optimizer's
  step counter only advances when the trunk is updated). It is saved in and
  restored from `.keras` files with the model (`model.trunk_optimizer`).
  `trunk_learning_rate(optimizer, factor)` makes one: a copy of `optimizer`
  whose learning rate (or schedule) is multiplied by `factor`.
- `freeze_trunk_epochs=N`: the trunk's variables are not updated during
  epochs `0 .. N-1` and are trained from epoch N on (its BatchNorm
  statistics still follow the data). Read from an epoch variable inside the
  compiled step (a `tf.cond`): no retracing, valid under `jit_compile`.
- `task_schedule={task: (start, end)}` (or `{task: start}`): the task's loss
  is on for epochs `start <= epoch < end` (`end=None`: to the end). While it
  is off, the task is treated as unlabelled by the weighting (zero loss,
  zero gradient, the weighting's state untouched) and its head's weights are
  held (even against weight decay or momentum). Its loss and metrics are
  still computed and logged.
- `clip_task_gradients={task: max_norm}` (or one float for every task):
  task t's contribution `w_t * L_t` (w_t its effective weight, the
  derivative of the weighted total with respect to L_t) is rescaled by
  `min(1, max_norm / ||g_t||)`, where `g_t` is its gradient with respect
  to what the step differentiates per task: the batch's shared features
  P2..P5 plus the task's head parameters (loss-based weightings, and
  gradient-based ones with `rep_grad=True`), or the trunk's parameters plus
  the head's (gradient-based weightings with `rep_grad=False`). The whole
  contribution of the task, in the trunk too, is scaled by the same factor.
  With a loss-based weighting the step then runs the trunk and the heads
  separately (as rep-grad does): one extra backward pass through the heads
  per clipped task, and one through the trunk.

The epoch variable and the task mask are set at the start of every epoch by
`TrainingControlsCallback`, which `MultiTaskModel.fit` adds itself.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops


class TrainingControls:
    """The `compile`-time training controls of one `MultiTaskModel`.

    Made by `MultiTaskModel.compile` (see the module docstring for the
    arguments); the train steps read it through the functions of this module.
    Holds two non-trainable variables outside the model's weights: the
    current epoch and the `(T,)` mask of enabled tasks.

    Args:
        model: the `MultiTaskModel`.
        trunk_optimizer: `None`, or an optimizer (instance or identifier)
            for the trunk's trainable variables.
        freeze_trunk_epochs: int >= 0.
        task_schedule: `None` or `{task: start | (start, end)}`.
        clip_task_gradients: `None`, a float, or `{task: max_norm}`.

    Raises:
        ValueError: unknown task names or invalid values.
    """

    def __init__(self, model, trunk_optimizer=None, freeze_trunk_epochs=0, task_schedule=None,
                 clip_task_gradients=None):
        self.task_names = list(model.task_names)
        self.freeze_trunk_epochs = int(freeze_trunk_epochs or 0)
        if self.freeze_trunk_epochs < 0:
            raise ValueError(f"freeze_trunk_epochs must be >= 0, got {freeze_trunk_epochs}.")
        self.task_schedule = _check_schedule(task_schedule, self.task_names)
        self.clip_task_gradients = _check_clips(clip_task_gradients, self.task_names)
        self.clip_values = [self.clip_task_gradients.get(name) for name in self.task_names]
        self.trunk_optimizer = None
        if trunk_optimizer is not None:
            self.trunk_optimizer = keras.optimizers.get(trunk_optimizer)
            if isinstance(self.trunk_optimizer, keras.optimizers.LossScaleOptimizer):
                raise ValueError(
                    "trunk_optimizer must not be a LossScaleOptimizer: the trunk's gradients are "
                    "unscaled with the main optimizer's loss scale; pass the inner optimizer.")
        self.epoch = keras.Variable(0, dtype="int64", trainable=False, name="mtl_epoch")
        self.task_enabled = keras.Variable(self.mask_at(0), dtype="float32", trainable=False,
                                           name="mtl_task_enabled")
        self._head_variables = None

    # --- state ------------------------------------------------------------------------
    @property
    def uses_epoch(self):
        """Whether the controls depend on the epoch (a callback must set it)."""
        return bool(self.freeze_trunk_epochs or self.task_schedule)

    @property
    def clips(self):
        """Whether any task's gradient is clipped."""
        return bool(self.clip_task_gradients)

    def mask_at(self, epoch):
        """`(T,)` float32 numpy: 1.0 for the tasks enabled in `epoch`."""
        mask = np.ones(len(self.task_names), "float32")
        for index, name in enumerate(self.task_names):
            if name in self.task_schedule:
                start, end = self.task_schedule[name]
                mask[index] = float(start <= epoch and (end is None or epoch < end))
        return mask

    def set_epoch(self, epoch):
        """Sets the epoch variable and the task mask (called at each epoch's start)."""
        self.epoch.assign(int(epoch))
        self.task_enabled.assign(self.mask_at(int(epoch)))

    def trunk_active(self):
        """Scalar bool tensor: whether the trunk is updated in the current epoch."""
        return ops.greater_equal(ops.convert_to_tensor(self.epoch), self.freeze_trunk_epochs)

    def head_variables(self, model):
        """Per task, the trainable variables of its head (cached)."""
        if self._head_variables is None:
            self._head_variables = task_head_variables(model)
        return self._head_variables

    def get_config(self):
        """The `compile` arguments, as given (for the model's compile config)."""
        return {
            "trunk_optimizer": self.trunk_optimizer,
            "freeze_trunk_epochs": self.freeze_trunk_epochs,
            "task_schedule": {name: tuple(v) for name, v in self.task_schedule.items()} or None,
            "clip_task_gradients": dict(self.clip_task_gradients) or None,
        }


def _check_schedule(schedule, task_names):
    result = {}
    for name, value in dict(schedule or {}).items():
        if name not in task_names:
            raise ValueError(f"task_schedule names unknown task '{name}'; the model's tasks are "
                             f"{task_names}.")
        if isinstance(value, dict):
            value = (value.get("start", 0), value.get("end"))
        elif not isinstance(value, (tuple, list)):
            value = (value, None)
        if len(value) != 2:
            raise ValueError(
                f"task_schedule['{name}'] must be start or (start, end), got {value!r}.")
        start, end = int(value[0] or 0), None if value[1] is None else int(value[1])
        if start < 0 or (end is not None and end <= start):
            raise ValueError(f"task_schedule['{name}'] needs 0 <= start < end, got {value!r}.")
        result[name] = (start, end)
    return result


def _check_clips(clips, task_names):
    if clips is None:
        return {}
    if not isinstance(clips, dict):
        clips = {name: clips for name in task_names}
    result = {}
    for name, value in clips.items():
        if name not in task_names:
            raise ValueError(f"clip_task_gradients names unknown task '{name}'; the model's "
                             f"tasks are {task_names}.")
        if value is None:
            continue
        if not float(value) > 0:
            raise ValueError(f"clip_task_gradients['{name}'] must be > 0, got {value!r}.")
        result[name] = float(value)
    return result


# --- set-up from MultiTaskModel.compile ------------------------------------------------------
def compile_controls(model, trunk_optimizer=None, freeze_trunk_epochs=0, task_schedule=None,
                     clip_task_gradients=None):
    """Attaches the training controls to a just-compiled `model`.

    Sets `model.training_controls` and `model.trunk_optimizer`, builds the
    optimizers when there is a trunk optimizer (the main one then holds no
    slots for the trunk's variables) and adds the controls to the model's
    compile config, so that `.keras` files restore them.
    """
    controls = TrainingControls(model, trunk_optimizer, freeze_trunk_epochs, task_schedule,
                                clip_task_gradients)
    if controls.clips and tf.distribute.get_strategy().num_replicas_in_sync > 1:
        raise ValueError("clip_task_gradients is not supported under a tf.distribute strategy with "
                         "more than one replica yet (the norms would be per replica).")
    model.training_controls = controls
    model.trunk_optimizer = controls.trunk_optimizer
    if controls.trunk_optimizer is not None:
        trunk_ids = {id(v) for v in model.trunk.trainable_variables}
        if not model.optimizer.built:
            model.optimizer.build(
                [v for v in model.trainable_variables if id(v) not in trunk_ids])
        if not controls.trunk_optimizer.built:
            controls.trunk_optimizer.build(list(model.trunk.trainable_variables))
    compile_config = getattr(model, "_compile_config", None)
    if compile_config is not None:
        compile_config.config.update(controls.get_config())
    return controls


def trunk_learning_rate(optimizer, factor):
    """A fresh copy of `optimizer` whose learning rate is `factor` times its own.

    A learning rate schedule is wrapped in `ScaledSchedule`. Use it as the
    `trunk_optimizer` of `compile` for a trunk learning rate that follows
    the heads' schedule at a fraction of it.

    Args:
        optimizer: a `keras.optimizers.Optimizer` (its config is copied, not
            its state).
        factor: float > 0.

    Returns:
        A new optimizer of the same class.

    Example:

    >>> heads = keras.optimizers.AdamW(1e-3)
    >>> model.compile(optimizer=heads, trunk_optimizer=trunk_learning_rate(heads, 0.1))
    """
    optimizer = keras.optimizers.get(optimizer)
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    config = optimizer.get_config()
    config.pop("name", None)
    learning_rate = optimizer._learning_rate
    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        config["learning_rate"] = ScaledSchedule(learning_rate, factor)
    else:
        config["learning_rate"] = float(ops.convert_to_numpy(learning_rate)) * float(factor)
    return type(optimizer).from_config(config)


@keras.saving.register_keras_serializable(package="keras_mtl")
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate schedule multiplied by a constant factor.

    Args:
        schedule: a `LearningRateSchedule` (or its serialized config).
        factor: float multiplier.
    """

    def __init__(self, schedule, factor):
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule)
        self.schedule = schedule
        self.factor = float(factor)

    def __call__(self, step):
        return self.schedule(step) * self.factor

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(self.schedule),
                "factor": self.factor}


# --- the callback -------------------------------------------------------------------------
class TrainingControlsCallback(keras.callbacks.Callback):
    """Sets the model's epoch variable and task mask at the start of each epoch.

    `MultiTaskModel.fit` adds it when the model was compiled with
    `freeze_trunk_epochs` or `task_schedule`; there is no need to pass it.
    """

    def on_epoch_begin(self, epoch, logs=None):
        controls = getattr(self.model, "training_controls", None)
        if controls is not None:
            controls.set_epoch(epoch)


def fit_callbacks(model, callbacks):
    """`callbacks` (None, one or a list) plus the controls' callback where needed."""
    if callbacks is None:
        callbacks = []
    elif isinstance(callbacks, keras.callbacks.Callback):
        callbacks = [callbacks]
    else:
        callbacks = list(callbacks)
    controls = getattr(model, "training_controls", None)
    if (controls is not None and controls.uses_epoch
            and not any(isinstance(c, TrainingControlsCallback) for c in callbacks)):
        callbacks.insert(0, TrainingControlsCallback())
    return callbacks


# --- helpers of the train steps --------------------------------------------------------------
def task_head_variables(model):
    """Per task (in task order), the trainable variables of its head.

    Found by walking the model's Functional graph back from the task's
    output to the trunk: every layer on the way belongs to the head.
    """
    trunk = model.trunk
    trunk_ids = {id(v) for v in trunk.variables}
    outputs = model.output
    if not isinstance(outputs, dict):
        outputs = dict(zip(model.output_names, keras.tree.flatten(outputs)))
    result = []
    for task in model.tasks:
        seen, stack, variables, var_ids = set(), [outputs[task.name]], [], set()
        while stack:
            history = getattr(stack.pop(), "_keras_history", None)
            if history is None:
                continue
            operation, node_index = history[0], history[1]
            if operation is trunk or id(operation) in seen:
                continue
            seen.add(id(operation))
            for variable in getattr(operation, "trainable_variables", []):
                if id(variable) not in trunk_ids and id(variable) not in var_ids:
                    var_ids.add(id(variable))
                    variables.append(variable)
            stack.extend(keras.tree.flatten(operation._inbound_nodes[node_index].input_tensors))
        result.append(variables)
    return result


def task_mask(model):
    """`(T,)` float32: 1.0 for the tasks enabled by the curriculum (all by default)."""
    controls = getattr(model, "training_controls", None)
    if controls is None or not controls.task_schedule:
        return ops.ones((len(model.tasks),), "float32")
    return ops.convert_to_tensor(controls.task_enabled)


def clip_task_gradient(model, index, gradients, scale=1.0):
    """Rescales task `index`'s gradients (a list) to its clip norm, if it has one.

    Args:
        model: the `MultiTaskModel`.
        index: the task's index.
        gradients: list of the task's gradient tensors (features or trunk
            parameters, and its head's parameters); `None` entries are kept.
        scale: the loss scale the gradients carry (mixed precision); the
            norm compared with the clip is that of the unscaled gradients.

    Returns:
        The list, multiplied by `min(1, clip / norm)`.
    """
    controls = getattr(model, "training_controls", None)
    clip = None if controls is None else controls.clip_values[index]
    if clip is None:
        return gradients
    present = [g for g in gradients if g is not None]
    if not present:
        return gradients
    squared = ops.sum(ops.stack([ops.sum(ops.square(ops.cast(g, "float32"))) for g in present]))
    norm = ops.sqrt(squared) / ops.cast(scale, "float32")
    factor = clip / ops.maximum(norm, clip)  # 1 when norm <= clip; NaN stays NaN (overflow)
    return [None if g is None else g * ops.cast(factor, g.dtype) for g in gradients]


def _maybe_cond(predicate, true_fn, false_fn, args):
    """`tf.cond(predicate, true_fn(*args), false_fn(*args))` that may call optimizers.

    Under a `tf.distribute` strategy that needs merge calls, the cond runs
    in cross-replica context and each branch runs per replica (the pattern
    of `keras.optimizers.LossScaleOptimizer`).
    """
    def run(fn, *fn_args):
        fn(*fn_args)
        return ops.zeros((), "bool")

    if (not tf.distribute.has_strategy()
            or tf.__internal__.distribute.strategy_supports_no_merge_call()):
        tf.cond(predicate, lambda: run(true_fn, *args), lambda: run(false_fn, *args))
        return

    def cross_replica(distribution, predicate, *fn_args):
        predicate = distribution.experimental_local_results(predicate)[0]

        def branch(fn):
            return lambda: run(distribution.extended.call_for_each_replica, fn, fn_args)

        tf.cond(predicate, branch(true_fn), branch(false_fn))

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(predicate, *args))


def _hold(variables, old_values, keep_old):
    """`variable = where(keep_old, old, variable)`, distribution-aware."""
    def update(distribution, variables, old_values, keep_old):
        def assign(variable, old, keep):
            return variable.assign(tf.where(keep, old, variable))

        for variable, old, keep in zip(variables, old_values, keep_old):
            tf_variable = variable.value if isinstance(variable, keras.Variable) else variable
            distribution.extended.update(tf_variable, assign, args=(old, keep), group=False)

    tf.__internal__.distribute.interim.maybe_merge_call(
        update, tf.distribute.get_strategy(), variables, old_values, keep_old)


def apply_gradients(model, gradients, variables):
    """`model.optimizer.apply(gradients, variables)` with the training controls.

    - The trunk's variables go to `model.trunk_optimizer` when there is one
      (their gradients unscaled by the main optimizer's loss scale, and the
      trunk step skipped when they are not finite).
    - With `freeze_trunk_epochs`, the trunk is updated only from that epoch
      on (a `tf.cond` on the epoch variable).
    - The heads of the tasks switched off by the curriculum keep their values.

    `None` gradients are dropped (their variables are left untouched).
    """
    pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
    controls = getattr(model, "training_controls", None)
    optimizer = model.optimizer
    if controls is None:
        optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        return

    held = []
    if controls.task_schedule:
        applied = {id(v) for _, v in pairs}
        mask = ops.convert_to_tensor(controls.task_enabled)
        for index, (name, head) in enumerate(zip(controls.task_names,
                                                 controls.head_variables(model))):
            if name in controls.task_schedule:
                held.extend((v, ops.less(mask[index], 0.5)) for v in head if id(v) in applied)
        old_values = [tf.identity(v.value if isinstance(v, keras.Variable) else v)
                      for v, _ in held]

    trunk_ids = {id(v) for v in model.trunk.trainable_variables}
    trunk = [(g, v) for g, v in pairs if id(v) in trunk_ids]
    others = [(g, v) for g, v in pairs if id(v) not in trunk_ids]
    other_grads, other_vars = [g for g, _ in others], [v for _, v in others]
    trunk_grads, trunk_vars = [g for g, _ in trunk], [v for _, v in trunk]

    if controls.trunk_optimizer is not None:
        if others:
            optimizer.apply(other_grads, other_vars)
        if trunk:
            scale = ops.cast(optimizer.scale_loss(ops.ones((), "float32")), "float32")
            trunk_grads = [g / ops.cast(scale, g.dtype) for g in trunk_grads]
            finite = ops.all(ops.stack([ops.all(ops.isfinite(g)) for g in trunk_grads]))
            _maybe_cond(ops.logical_and(controls.trunk_active(), finite),
                        controls.trunk_optimizer.apply, lambda *args: None,
                        (trunk_grads, trunk_vars))
    elif controls.freeze_trunk_epochs and trunk:
        all_grads, all_vars = [g for g, _ in pairs], [v for _, v in pairs]

        def update_all(all_grads, all_vars, other_grads, other_vars):
            optimizer.apply(all_grads, all_vars)

        def update_others(all_grads, all_vars, other_grads, other_vars):
            if other_vars:
                optimizer.apply(other_grads, other_vars)

        _maybe_cond(controls.trunk_active(), update_all, update_others,
                    (all_grads, all_vars, other_grads, other_vars))
    else:
        optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])

    if held:
        _hold([v for v, _ in held], old_values, [keep for _, keep in held])


def _add(a, b):
    """`a + b` where `None` is an absent (unconnected) gradient."""
    if a is None or b is None:
        return b if a is None else a
    return a + ops.cast(b, a.dtype)


def clipped_loss_step(model, images, targets, sample_weights):
    """The train step of a loss-based weighting with per-task gradient clipping.

    The trunk and the heads run separately (`keras_mtl.gradient_step.heads_model`),
    so that each clipped task's gradient with respect to the shared features
    and its head's parameters costs one backward pass through its head only:

    1. `total = weighting(losses, present * mask)`; `w = d total / d losses`.
    2. `G` = gradient of `total` (minus regularisation) w.r.t. the features
       and every non-trunk variable (heads, the weighting's own variables).
    3. For each clipped task t: `g_t` = gradient of `w_t L_t` w.r.t. the
       features and the non-trunk variables; `G += (s_t - 1) g_t` with
       `s_t = min(1, clip_t / ||g_t||)`.
    4. The features' part of `G` is back-propagated through the trunk once;
       regularisation losses add their plain gradient.

    Returns:
        The logs of `model._update_metrics`.
    """
    from keras_mtl.gradient_step import (_gradient, features_model, heads_model,
                                         separate_task_losses)

    if not model.shared_features:
        raise ValueError(
            f"Per-task gradient clipping with a loss-based weighting needs shared features; "
            f"architecture {type(model.architecture).__name__} has none. Use a gradient-based "
            "weighting, or no clipping.")
    optimizer = model.optimizer
    shared_vars = list(model.shared_variables)
    shared_ids = {id(v) for v in shared_vars}
    other_vars = [v for v in model.trainable_variables if id(v) not in shared_ids]
    scale = ops.cast(optimizer.scale_loss(ops.ones((), "float32")), "float32")  # loss scale
    mask = task_mask(model)  # (T,)

    with tf.GradientTape(persistent=True) as tape:
        features = keras.tree.flatten(features_model(model)(images, training=True))  # [P2..P5]
        leaves = [tf.stop_gradient(feature) for feature in features]
        tape.watch(leaves)
        outputs = heads_model(model)(leaves, training=True)
        losses, present = separate_task_losses(model, targets, outputs, sample_weights)
        task_loss_list = losses
        losses, present = ops.stack(losses), ops.stack(present)  # (T,), (T,)
        total = model.weighting(losses, present * mask, training=True)
        scaled_total = total * scale
        regularization = ops.cast(ops.sum(model.losses), "float32") if model.losses else None
        if regularization is not None:
            scaled_regularization = regularization * scale

    task_weights = _gradient(tape, total, [losses])[0]  # (T,) effective weights d total / d L_t
    sources = leaves + other_vars
    combined = _gradient(tape, scaled_total, leaves) + tape.gradient(scaled_total, other_vars)
    for index, task in enumerate(model.tasks):
        if model.training_controls.clip_values[index] is None or task.name not in targets:
            continue
        # The gradient of w_t L_t (w_t held): L_t's with w_t as its output gradient.
        contribution = tape.gradient(task_loss_list[index], sources,
                                     output_gradients=task_weights[index] * scale)
        clipped = clip_task_gradient(model, index, contribution, scale)
        combined = [_add(c, None if g is None else k - g)
                    for c, k, g in zip(combined, clipped, contribution)]

    feature_grads = combined[:len(leaves)]
    shared_grads = (_gradient(tape, features, shared_vars, output_gradients=feature_grads)
                    if shared_vars else [])
    variables = shared_vars + other_vars
    # `None` (a head of a task absent from the batch) leaves the variable untouched.
    gradients = list(shared_grads) + combined[len(leaves):]
    if regularization is not None:
        extra = tape.gradient(scaled_regularization, variables)
        gradients = [_add(g, e) for g, e in zip(gradients, extra)]
        total = total + regularization
    del tape
    apply_gradients(model, gradients, variables)
    return model._update_metrics(total, losses, present, targets, outputs, sample_weights)
