"""Per-task gradients of the shared parameters or features, for measurements (TensorFlow only).

Used by `keras_mtl.callbacks.GradientConflictMonitor` and
`keras_mtl.analysis.task_affinity`. The gradients are those of each task's
own (unweighted) mean loss on a batch, as `MultiTaskModel.task_losses`
defines it, taken with the helpers of `keras_mtl.training`:

- `on="parameters"`: with respect to the trunk's trainable variables
  (flattened and concatenated: `D` = number of shared parameters); one
  backward pass through the trunk per task.
- `on="features"`: with respect to the trunk's outputs P2..P5 on the batch
  (flattened: `D` = B x feature size); the trunk runs once and each
  backward pass stops at the features (LibMTL's rep-grad).

Measurements must not change the model: the forward pass runs in training
mode (the gradients the train step sees) and the model's non-trainable
variables (BatchNorm statistics) are restored afterwards.
"""

import keras
import tensorflow as tf
from keras import ops

from keras_mtl.training.gradients import flatten_rows, gradients_or_zeros
from keras_mtl.training.losses import separate_task_losses

ON = ("parameters", "features")


def check_on(on):
    if on not in ON:
        raise ValueError(f"`on` must be one of {ON}, got {on!r}.")
    return on


def task_gradients(model, images, targets, sample_weights=None, on="parameters", training=True):
    """Per-task gradients of the shared parameters (or features) on one batch.

    Graph-friendly: call it inside a `tf.function`. Wrap it in
    `preserving_state` to leave the BatchNorm statistics untouched.

    Args:
        model: a `keras_mtl.MultiTaskModel`.
        images: `(B, H, W, 3)` batch.
        targets: dict by task name (a task may be absent).
        sample_weights: optional dict by task name of `(B,)` weights.
        on: `"parameters"` or `"features"` (see the module docstring).
        training: the mode of the forward pass.

    Returns:
        `(grads, losses, present, shared_grads)`: `grads` `(T, D)` float32
        (row t = task t's gradient, zero when it has no labels), `losses`
        `(T,)`, `present` `(T,)` (1.0 where labelled), and `shared_grads`:
        per task, the list of gradient tensors (per trunk variable or per
        feature map) before flattening.
    """
    check_on(on)
    sample_weights = dict(sample_weights or {})
    if on == "features" and not model.shared_features:
        raise ValueError(f"Architecture {type(model.architecture).__name__} has no shared "
                         "features to measure; use on='parameters'.")
    with tf.GradientTape(persistent=True) as tape:
        if on == "features":  # sources: the watched features P2..P5
            _, sources, outputs = model.feature_split.run(images, tape, training=training)
        else:
            sources = list(model.shared_variables)
            outputs = model(images, training=training)
        losses, present = separate_task_losses(model.tasks, targets, outputs, sample_weights)
        losses = [loss * labelled for loss, labelled in zip(losses, present)]
    if not sources:
        raise ValueError("The model has no shared trainable variables (a frozen trunk, or "
                         "architecture 'separate'): nothing is shared to measure; "
                         "use on='features'.")
    shared_grads = [gradients_or_zeros(tape, loss, sources) for loss in losses]
    del tape
    grads = ops.stack([flatten_rows(g) for g in shared_grads])  # (T, D)
    return grads, ops.stack(losses), ops.stack(present), shared_grads


def gradient_statistics(grads, present):
    """Cosine matrix `(T, T)` and norms `(T,)` of the rows of `grads` `(T, D)`.

    Pairs with a task that has no labels (or a zero gradient) get NaN.
    """
    gram = ops.matmul(grads, ops.transpose(grads))  # (T, T)
    norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))  # (T,)
    valid = ops.logical_and(present > 0.5, norms > 0.0)  # (T,)
    pair = ops.logical_and(ops.expand_dims(valid, 1), ops.expand_dims(valid, 0))  # (T, T)
    denominator = ops.expand_dims(norms, 1) * ops.expand_dims(norms, 0)
    cosine = ops.where(pair, gram / ops.where(pair, denominator, 1.0), float("nan"))
    return cosine, ops.where(present > 0.5, norms, float("nan"))


def preserving_state(model, fn):
    """Runs `fn()` and restores the model's non-trainable variables after it.

    The forward passes of a measurement run in training mode, which moves
    the BatchNorm statistics; this puts them back (exactly). Graph-friendly.
    """
    variables = list(model.non_trainable_variables)
    saved = [tf.identity(v.value if isinstance(v, keras.Variable) else v) for v in variables]
    result = fn()
    flat = [t for t in tf.nest.flatten(result) if isinstance(t, tf.Tensor)]
    with tf.control_dependencies(flat):
        for variable, value in zip(variables, saved):
            variable.assign(value)
    return result
