"""The train step of gradient-based weightings (TensorFlow only).

`MultiTaskModel.train_step` calls `gradient_balanced_step` when its
weighting is a `GradientWeighting`. One step:

1. Forward pass; per-task losses `L_t` `(T,)` and presence `(T,)`.
2. Per-task gradients of `objective_scales(L)[t] * L_t`: one backward pass per
   task (T gradient calls on one persistent tape), either to the shared
   parameters (`model.shared_variables`, those of the architecture: the
   trunk's trainable variables for hard sharing; flattened into a `(T, D)`
   matrix) or, with the weighting's `rep_grad=True`, only to the shared
   features (`model.shared_features`: the trunk's outputs P2..P5 of the
   batch for hard sharing, flattened), which stops there and is much
   cheaper. An architecture without shared features (cross-stitch cut into
   stages) takes the parameter gradients.
3. `direction = weighting.aggregate(grads, losses, present)` `(D,)`.
4. The shared parameters get `direction` (with `rep_grad=True`, it is
   back-propagated once through what computes the features, as their output
   gradient). Every other parameter gets the sum of the per-task gradients:
   a task's own head (or attention, adapter) parameters get that task's own
   gradient. Regularisation losses (`model.losses`) add their plain gradient.
   Without shared trainable parameters (`separate`, a frozen trunk with
   `adapters`) there is nothing to balance: the step warns once and every
   parameter gets its own tasks' gradients.
5. `optimizer.apply`, then the model's metrics and logs.

Mixed precision: the per-task losses are multiplied by the optimizer's loss
scale (`optimizer.scale_loss`; 1 without a `LossScaleOptimizer`), the
per-task gradients are divided by it before `aggregate` (so the methods see
true gradients) and the direction is multiplied by it again, because
`LossScaleOptimizer.apply` unscales every gradient itself. When a scaled
gradient overflows, the weighting sees every task as absent (its state is
left untouched, and it logs weight 0 for that step) and the shared
gradients are NaN, so the optimizer skips the step and lowers the scale;
the logged loss of such a step is the plain sum of the task losses.

A task without labels in the batch has zero loss, zero gradient and
presence 0: it is left out of the aggregation.

`tf.distribute` (R > 1 replicas, e.g. `MirroredStrategy`,
`MultiWorkerMirroredStrategy`): the losses are the global-batch losses
(`MultiTaskModel.task_losses`) and each replica's objectives are divided by
R, so the sum over replicas of a replica's per-task gradients is the
one-device gradient. Before `aggregate`, the per-task gradients of the
shared parameters are all-reduced (summed) and every replica aggregates
the same `(T, D)` matrix, so the direction (and the weighting's state) is
the one-device one on every replica; each replica hands `direction / R` to
the optimizer, which sums the replicas' gradients. With `rep_grad=True`
the rows (gradients of this replica's features) are all-gathered along D
instead, the direction of the global batch is computed on every replica and
each replica back-propagates its own slice through the trunk. Head and
regularisation gradients are the replica's own (divided by R), summed by
the optimizer.
"""

import warnings
import weakref

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_mtl import training_controls as controls_lib

_HEADS_MODELS = weakref.WeakKeyDictionary()
_FEATURES_MODELS = weakref.WeakKeyDictionary()


def heads_model(model):
    """A Functional view of what follows the shared features: features -> raw outputs.

    Its inputs are `model.shared_features` (for hard sharing the outputs of
    the trunk's call inside `model`'s graph, P2..P5 as a list in
    `keras.tree.flatten` order of the trunk's output dict) and its outputs
    `model`'s outputs; it shares every layer with `model` (no copy). With
    it, the step computes the features and the rest separately, so the
    features are independent leaves whose gradients are the partial
    derivatives of the losses. Cached per model.
    """
    view = _HEADS_MODELS.get(model)
    if view is None:
        view = keras.Model(model.shared_features, model.output, name=f"{model.name}_heads")
        _HEADS_MODELS[model] = view
    return view


def features_model(model):
    """A Functional view from `model`'s images to its shared features (cached)."""
    view = _FEATURES_MODELS.get(model)
    if view is None:
        view = keras.Model(model.input, model.shared_features, name=f"{model.name}_features")
        _FEATURES_MODELS[model] = view
    return view


def separate_task_losses(model, targets, outputs, sample_weights):
    """Each task's loss computed on its own: `(losses, present)`, lists of T scalars.

    The other tasks' targets are left out of each call, so that the backward
    pass of task t only reaches head t, not every head with zeros. A task
    absent from `targets` gets loss 0 and presence 0.
    """
    losses, present = [], []
    for index, task in enumerate(model.tasks):
        if task.name not in targets:
            losses.append(ops.zeros((), "float32"))
            present.append(ops.zeros((), "float32"))
            continue
        task_loss, task_present = model.task_losses(
            {task.name: targets[task.name]}, outputs, sample_weights)
        losses.append(task_loss[index])
        present.append(task_present[index])
    return losses, present


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


def _all_gather_rows(context, grads):
    """All-gathers `(T, D_r)` rows along D; returns `(rows, offset, D_r)`.

    `rows` `(T, sum_r D_r)` holds the replicas' columns in replica order and
    `offset` is where this replica's `D_r` columns start.
    """
    size = ops.shape(grads)[1]
    sizes = context.all_gather(ops.reshape(ops.cast(size, "int32"), (1,)), axis=0)  # (R,)
    replica = ops.cast(context.replica_id_in_sync_group, "int32")
    offset = ops.sum(ops.where(ops.arange(ops.shape(sizes)[0]) < replica, sizes, 0))
    return context.all_gather(grads, axis=1), offset, size


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

    shared_vars = list(model.shared_variables)
    excluded = {id(v) for v in shared_vars} | {id(v) for v in weighting.variables}
    head_vars = [v for v in model.trainable_variables if id(v) not in excluded]
    if not shared_vars:  # python: warns when the step is traced
        warnings.warn(
            f"{type(weighting).__name__}: the model has no shared trainable parameters "
            f"(architecture {type(model.architecture).__name__}, or a frozen "
            "trunk), so there is nothing to balance; every parameter gets its own tasks' "
            "gradients (the plain sum).", stacklevel=2)
    rep_grad = weighting.rep_grad and bool(shared_vars)
    if rep_grad and not model.shared_features:
        warnings.warn(
            f"{type(weighting).__name__}(rep_grad=True): architecture "
            f"{type(model.architecture).__name__} has no shared features; taking the gradients "
            "of the shared parameters instead.", stacklevel=2)
        rep_grad = False

    from keras_mtl.model import replica_context

    context = replica_context()  # None on one device
    replicas = 1 if context is None else context.num_replicas_in_sync
    scale = ops.cast(optimizer.scale_loss(ops.ones((), "float32")), "float32")  # loss scale
    mask = controls_lib.task_mask(model)  # (T,) tasks switched on by the curriculum

    # XLA per replica under tf.distribute with jit_compile=True; else the plain calls.
    compiled = model.compiled_per_replica
    with tf.GradientTape(persistent=True) as tape:
        if rep_grad:
            trunk = compiled("trunk", lambda x: features_model(model)(x, training=True))
            features = keras.tree.flatten(trunk(images))  # [P2, ..., P5]
            leaves = [tf.stop_gradient(feature) for feature in features]
            tape.watch(leaves)
            heads = compiled("heads", lambda f: heads_model(model)(f, training=True))
            outputs = heads(leaves)
        else:
            outputs = compiled("model", lambda x: model(x, training=True))(images)
        task_losses, task_present = separate_task_losses(model, targets, outputs, sample_weights)
        losses, present = ops.stack(task_losses), ops.stack(task_present)  # (T,), (T,)
        scales = ops.stop_gradient(ops.cast(weighting.objective_scales(losses), "float32"))  # (T,)
        objectives = []  # None: the task is absent from the batch, no gradient at all
        for index, task in enumerate(model.tasks):
            # From the task's own scalar, not `losses[index]`: the gradient of a slice of
            # the stack would send zeros back through every other task's head.
            objective = (task_losses[index] * task_present[index] * mask[index] * scales[index]
                         * scale)
            objectives.append(None if task.name not in targets
                              else objective / replicas if replicas > 1 else objective)
        regularization = ops.cast(ops.sum(model.losses), "float32") if model.losses else None
        if regularization is not None:
            scaled_regularization = regularization * scale
            if replicas > 1:
                scaled_regularization = scaled_regularization / replicas

    # --- per-task gradients: one backward pass per task ------------------------------
    sources = leaves if rep_grad else shared_vars
    rows, head_grads = [], [ops.zeros_like(v) for v in head_vars]
    for index, objective in enumerate(objectives):
        if objective is None:
            rows.append(None)
            continue
        task_grads = _gradient(tape, objective, sources + head_vars)
        task_grads = controls_lib.clip_task_gradient(model, index, task_grads, scale)
        rows.append(_flatten_rows(task_grads[:len(sources)]) if sources else None)
        head_grads = [a + ops.cast(b, a.dtype) for a, b in zip(head_grads, task_grads[len(sources):])]

    shared_grads = [ops.zeros_like(v) for v in shared_vars]
    finite = ops.convert_to_tensor(True)
    computed = [row for row in rows if row is not None]
    if sources and computed:
        zero_row = ops.zeros_like(computed[0])
        grads = ops.stack([zero_row if row is None else row for row in rows]) / scale  # (T, D)
        if context is not None:
            if rep_grad:  # (T, D_global): every replica's feature gradients
                grads, offset, size = _all_gather_rows(context, grads)
            else:  # (T, D): the global batch's per-task gradients
                grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        finite = ops.all(ops.isfinite(grads))
        grads = ops.where(finite, grads, 0.0)
        direction = weighting.aggregate(
            grads, ops.stop_gradient(losses), present * mask * ops.cast(finite, "float32"))  # (D,)
        direction = ops.where(finite, direction, float("nan")) * scale  # skipped by a LossScaleOptimizer
        if context is not None:
            if rep_grad:  # this replica's features only
                direction = direction[offset:offset + size]
            else:  # the same on every replica; the optimizer sums R copies
                direction = direction / replicas
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
    controls_lib.apply_gradients(model, gradients, variables)  # trunk optimizer, freezing

    weighted = ops.sum(losses * present * ops.convert_to_tensor(weighting.current_weights()))
    total = ops.where(finite, weighted, ops.sum(losses * present))  # a skipped step logs the sum
    if regularization is not None:
        total = total + regularization
    return model._update_metrics(total, losses, present, targets, outputs, sample_weights)
