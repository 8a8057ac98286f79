"""Training controls of a `MultiTaskModel`: a trunk optimizer, trunk freezing,
task curricula and per-task gradient clipping.

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
  `keras_mtl.training.trunk_learning_rate(optimizer, factor)` makes one: a
  copy of `optimizer` whose learning rate (or schedule) is multiplied by
  `factor`.
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
`TrainingControlsCallback`, which `MultiTaskModel.fit` adds itself. How the
gradients then reach the variables (the two optimizers, freezing, held
heads) is `keras_mtl.training.updates`.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops


class TrainingControls:
    """The `compile`-time training controls of one `MultiTaskModel`.

    Made by `MultiTaskModel.compile` (see the module docstring for the
    arguments); the train steps read it through the functions of this
    module and `keras_mtl.training.updates`.
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
    """The training controls of a just-compiled `model`.

    Builds the optimizers (with a trunk optimizer, the main one holds no
    slots for the trunk's variables), so that their variables are not made
    inside the first trace of the train step. The model keeps the result as
    `model.training_controls` and adds its `get_config()` to its compile
    config, so that `.keras` files restore the controls.
    """
    controls = TrainingControls(model, trunk_optimizer, freeze_trunk_epochs, task_schedule,
                                clip_task_gradients)
    if controls.clips and tf.distribute.get_strategy().num_replicas_in_sync > 1:
        raise ValueError("clip_task_gradients is not supported under a tf.distribute strategy with "
                         "more than one replica yet (the norms would be per replica).")
    if controls.trunk_optimizer is not None:
        trunk_ids = {id(v) for v in model.trunk.trainable_variables}
        if not model.optimizer.built:
            model.optimizer.build(
                [v for v in model.trainable_variables if id(v) not in trunk_ids])
        if not controls.trunk_optimizer.built:
            controls.trunk_optimizer.build(list(model.trunk.trainable_variables))
    elif model.optimizer is not None and not model.optimizer.built:
        # Built now, not in the first trace of the train step: a variable made while tracing
        # makes TensorFlow trace the step a second time (about half of a small run's set-up).
        model.optimizer.build(model.trainable_variables)
    return controls


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
    """Per task (in task order), the trainable variables of its own part of the model.

    Task t's part is what lies between the images and its output, less the
    trunk: its head (and its attention modules, adapters, column). Found
    with a Functional view from the model's input to the task's output,
    whose `trainable_variables` are those of every layer on the way.
    """
    trunk_ids = {id(v) for v in model.trunk.variables}
    outputs = model.output
    if not isinstance(outputs, dict):
        outputs = dict(zip(model.output_names, keras.tree.flatten(outputs)))
    result = []
    for task in model.tasks:
        view = keras.Model(model.input, outputs[task.name], name=f"{model.name}_{task.name}_part")
        result.append([v for v in view.trainable_variables if id(v) not in trunk_ids])
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
