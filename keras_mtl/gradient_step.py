"""The train step of gradient-based weightings (TensorFlow only).

`MultiTaskModel.train_step` calls `gradient_balanced_step` when its
weighting is a `GradientWeighting`. One step:

1. Forward pass; per-task losses `L_t` `(T,)` and presence `(T,)`.
2. Per-task gradients of `loss_scales()[t] * L_t`: one backward pass per
   task (T gradient calls on one persistent tape), either to the shared
   parameters (the trunk's trainable variables, flattened into a `(T, D)`
   matrix) or, with the weighting's `rep_grad=True`, only to the shared
   features (the trunk's outputs P2..P5 of the batch, flattened), which
   stops at the trunk and is much cheaper.
3. `direction = weighting.aggregate(grads, losses, present)` `(D,)`.
4. The shared parameters get `direction` (with `rep_grad=True`, it is
   back-propagated through the trunk once, as the output gradient of the
   features). Each task's head parameters get that task's own gradient
   (the sum of the per-task head gradients, since the heads are disjoint).
   Regularisation losses (`model.losses`) add their plain gradient.
5. `optimizer.apply`, then the model's metrics and logs.

Mixed precision: the per-task losses are multiplied by the optimizer's loss
scale (`optimizer.scale_loss`; 1 without a `LossScaleOptimizer`), the
per-task gradients are divided by it before `aggregate` (so the methods see
true gradients) and the direction is multiplied by it again, because
`LossScaleOptimizer.apply` unscales every gradient itself. When a scaled
gradient overflows, the weighting sees every task as absent (its state is
left untouched) and the shared gradients are NaN, so the optimizer skips
the step and lowers the scale.

A task without labels in the batch has zero loss, zero gradient and
presence 0: it is left out of the aggregation.
"""

import weakref

import keras
import numpy as np
import tensorflow as tf
from keras import ops

_HEADS_MODELS = weakref.WeakKeyDictionary()


def heads_model(model):
    """A Functional view of `model`'s heads: trunk features -> raw outputs.

    Its inputs are the outputs of the trunk's call inside `model`'s graph
    (P2..P5, as a list in `keras.tree.flatten` order of the trunk's output
    dict) and its outputs `model`'s outputs; it shares every layer with
    `model` (no copy). With it, the step runs `model.trunk` and the heads
    separately, so the features are independent leaves whose gradients are
    the heads' partial derivatives. Cached per model.
    """
    view = _HEADS_MODELS.get(model)
    if view is None:
        trunk = model.trunk
        model_nodes = getattr(model, "_nodes", set())
        nodes = [
            node for index, node in enumerate(trunk._inbound_nodes)
            if f"{id(trunk)}_ib-{index}" in model_nodes
        ] or trunk._inbound_nodes[-1:]
        features = list(nodes[0].output_tensors)
        view = keras.Model(features, model.output, name=f"{model.name}_heads")
        _HEADS_MODELS[model] = view
    return view


def _gradient(tape, target, sources, output_gradients=None):
    """`tape.gradient` with zeros (not `None`) for unconnected sources."""
    grads = tape.gradient(target, sources, output_gradients=output_gradients)
    return [
        g if g is not None
        else tf.zeros_like(s) if isinstance(s, tf.Tensor)  # a feature map (dynamic batch size)
        else ops.zeros(s.shape, s.dtype)  # a variable
        for g, s in zip(grads, sources)
    ]


def _flatten_rows(tensors):
    """List of tensors -> `(D,)` float32, concatenated in order."""
    return ops.concatenate([ops.reshape(ops.cast(t, "float32"), (-1,)) for t in tensors], axis=0)


def _split_like(vector, tensors):
    """Splits a `(D,)` vector into pieces shaped (and typed) like `tensors`."""
    pieces, offset = [], 0
    for tensor in tensors:
        static = tuple(tensor.shape)
        if None in static:  # a feature map with a dynamic batch size
            shape = ops.shape(tensor)
            size = ops.prod(ops.convert_to_tensor(shape))
        else:
            shape, size = static, int(np.prod(static, dtype="int64"))
        piece = vector[offset:offset + size]
        pieces.append(ops.cast(ops.reshape(piece, shape), tensor.dtype))
        offset = offset + size
    return pieces


def gradient_balanced_step(model, images, targets, sample_weights):
    """One train step of `model` whose weighting is gradient-based.

    Args:
        model: a `MultiTaskModel` with a `GradientWeighting`, compiled.
        images: `(B, H, W, 3)` batch.
        targets: dict of the batch's targets by task name (absent = missing).
        sample_weights: dict of `(B,)` sample weights by task name.

    Returns:
        The logs of `model._update_metrics` (losses, metrics, `weight/<task>`).
    """
    weighting = model.weighting
    optimizer = model.optimizer
    num_tasks = len(model.tasks)

    shared_vars = list(model.trunk.trainable_variables)
    excluded = {id(v) for v in shared_vars} | {id(v) for v in weighting.variables}
    head_vars = [v for v in model.trainable_variables if id(v) not in excluded]
    rep_grad = weighting.rep_grad and bool(shared_vars)

    scale = ops.cast(optimizer.scale_loss(ops.ones((), "float32")), "float32")  # loss scale
    loss_scales = ops.stop_gradient(ops.cast(weighting.loss_scales(), "float32"))  # (T,)

    with tf.GradientTape(persistent=True) as tape:
        if rep_grad:
            features = keras.tree.flatten(model.trunk(images, training=True))  # [P2, ..., P5]
            leaves = [tf.stop_gradient(feature) for feature in features]
            tape.watch(leaves)
            outputs = heads_model(model)(leaves, training=True)
        else:
            outputs = model(images, training=True)
        # Each task's loss on its own (the others' targets left out), so that the
        # backward pass of task t only reaches head t, not every head with zeros.
        losses, present, objectives = [], [], []
        for index, task in enumerate(model.tasks):
            if task.name not in targets:  # absent from the batch: no gradient at all
                losses.append(ops.zeros((), "float32"))
                present.append(ops.zeros((), "float32"))
                objectives.append(None)
                continue
            task_loss, task_present = model.task_losses(
                {task.name: targets[task.name]}, outputs, sample_weights)
            losses.append(task_loss[index])
            present.append(task_present[index])
            objectives.append(losses[-1] * present[-1] * loss_scales[index] * scale)
        losses, present = ops.stack(losses), ops.stack(present)  # (T,), (T,)
        regularization = ops.cast(ops.sum(model.losses), "float32") if model.losses else None
        if regularization is not None:
            scaled_regularization = regularization * scale

    # --- per-task gradients: one backward pass per task ------------------------------
    sources = leaves if rep_grad else shared_vars
    rows, head_grads = [], [ops.zeros_like(v) for v in head_vars]
    for objective in objectives:
        if objective is None:
            rows.append(None)
            continue
        task_grads = _gradient(tape, objective, sources + head_vars)
        rows.append(_flatten_rows(task_grads[:len(sources)]) if sources else None)
        head_grads = [a + ops.cast(b, a.dtype) for a, b in zip(head_grads, task_grads[len(sources):])]

    shared_grads = [ops.zeros_like(v) for v in shared_vars]
    computed = [row for row in rows if row is not None]
    if sources and computed:
        zero_row = ops.zeros_like(computed[0])
        grads = ops.stack([zero_row if row is None else row for row in rows]) / scale  # (T, D)
        finite = ops.all(ops.isfinite(grads))
        grads = ops.where(finite, grads, 0.0)
        direction = weighting.aggregate(
            grads, ops.stop_gradient(losses), present * ops.cast(finite, "float32"))  # (D,)
        direction = ops.where(finite, direction, float("nan")) * scale  # skipped by a LossScaleOptimizer
        if rep_grad:
            feature_grads = _split_like(direction, features)
            shared_grads = _gradient(tape, features, shared_vars, output_gradients=feature_grads)
        else:
            shared_grads = _split_like(direction, shared_vars)

    variables = shared_vars + head_vars
    gradients = list(shared_grads) + head_grads
    if regularization is not None:
        extra = _gradient(tape, scaled_regularization, variables)
        gradients = [g + ops.cast(e, g.dtype) for g, e in zip(gradients, extra)]
    del tape
    optimizer.apply(gradients, variables)

    total = ops.sum(losses * present * ops.convert_to_tensor(weighting.current_weights()))
    if regularization is not None:
        total = total + regularization
    return model._update_metrics(total, losses, present, targets, outputs, sample_weights)
