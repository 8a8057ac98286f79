"""The three train steps of a `MultiTaskModel`, each returning a `StepResult`.

- `loss_step`: the weighting combines the per-task losses into one
  objective; one backward pass (loss-based weightings).
- `clipped_loss_step`: the same with per-task gradient clipping
  (`compile(clip_task_gradients=...)`).
- `gradient_balanced_step`: one backward pass per task, the weighting
  combines the per-task gradients (gradient-based weightings).

`select_step(model)` picks one. The steps read only public attributes of
the model: `tasks`, `weighting`, `optimizer`, `trainable_variables`,
`shared_variables`, `shared_features`, `losses`, `trunk`, `architecture`,
`training_controls`, `feature_split` and `per_replica_xla`.

Mixed precision: the objectives are multiplied by the optimizer's loss
scale (`optimizer.scale_loss`; 1 without a `LossScaleOptimizer`).

`tf.distribute` (R > 1 replicas): the losses are the global batch's
(`keras_mtl.training.losses`) and each replica's objective is divided by R,
so the optimizer's sum over replicas is the one-device gradient.
"""

import dataclasses
import warnings

import tensorflow as tf
from keras import ops

from keras_mtl import distribute
from keras_mtl.training import controls as controls_lib
from keras_mtl.training import gramian as gramian_lib
from keras_mtl.training import losses as losses_lib
from keras_mtl.training import task_chunks
from keras_mtl.training.gradients import (add_gradients, flatten_rows, gradients_or_zeros,
                                          split_like)
from keras_mtl.training.updates import apply_gradients


@dataclasses.dataclass
class StepResult:
    """What a train step reports for the metrics and logs.

    Attributes:
        total: scalar, the weighted objective (plus regularisation).
        losses: `(T,)` the per-task losses.
        present: `(T,)` 1.0 for the tasks labelled in the batch.
        outputs: dict of the raw outputs by task name.
    """

    total: object
    losses: object
    present: object
    outputs: dict


def select_step(model):
    """The step function for `model`'s weighting and training controls."""
    if model.weighting.gradient_based:
        return gradient_balanced_step
    controls = model.training_controls
    if controls is not None and controls.clips:
        return clipped_loss_step
    return loss_step


def _regularization(model):
    """The sum of `model.losses` as float32, or `None` without any."""
    return ops.cast(ops.sum(model.losses), "float32") if model.losses else None


def _loss_scale(model):
    """The optimizer's loss scale (mixed precision), 1.0 without one."""
    return ops.cast(model.optimizer.scale_loss(ops.ones((), "float32")), "float32")


def forward_and_losses(model, images, targets, sample_weights, training):
    """The forward pass, then `(outputs, losses (T,), present (T,))`.

    Under R > 1 replicas the forward pass and this replica's loss parts run
    in one function (compiled with XLA per replica when asked) and the
    global-batch losses are formed outside it.
    """
    if distribute.replica_context() is None:
        outputs = model(images, training=training)
        return (outputs, *losses_lib.task_losses(model.tasks, targets, outputs, sample_weights))

    def local(images, targets, sample_weights):
        outputs = model(images, training=training)
        return outputs, losses_lib.local_loss_parts(model.tasks, targets, outputs, sample_weights)

    outputs, parts = model.per_replica_xla.wrap(f"step_{training}", local)(
        images, targets, sample_weights)
    return (outputs, *losses_lib.global_task_losses(parts))


def loss_step(model, images, targets, sample_weights):
    """One step of a loss-based weighting: `weighting(losses)`, one backward pass."""
    with tf.GradientTape() as tape:
        outputs, losses, present = forward_and_losses(
            model, images, targets, sample_weights, training=True)  # (T,), (T,)
        # Tasks switched off by the curriculum count as unlabelled (compile's task_schedule).
        total = model.weighting(losses, present * controls_lib.task_mask(model), training=True)
        regularization = _regularization(model)
        if regularization is not None:
            total = total + regularization
        scaled = model.optimizer.scale_loss(distribute.scale_for_replicas(total))
    variables = model.trainable_variables
    # Heads of tasks absent from this batch have no gradient: left untouched.
    apply_gradients(model, tape.gradient(scaled, variables), variables)
    return StepResult(total, losses, present, outputs)


def clipped_loss_step(model, images, targets, sample_weights):
    """One step of a loss-based weighting with per-task gradient clipping.

    The trunk and the heads run separately (`model.feature_split`), so that
    each clipped task's gradient with respect to the shared features and
    its head's parameters costs one backward pass through its head only:

    1. `total = weighting(losses, present * mask)`; `w = d total / d losses`.
    2. `G` = gradient of `total` (minus regularisation) w.r.t. the features
       and every non-trunk variable (heads, the weighting's own variables).
    3. For each clipped task t: `g_t` = gradient of `w_t L_t` w.r.t. the
       features and the non-trunk variables; `G += (s_t - 1) g_t` with
       `s_t = min(1, clip_t / ||g_t||)`.
    4. The features' part of `G` is back-propagated through the trunk once;
       regularisation losses add their plain gradient.
    """
    if not model.shared_features:
        raise ValueError(
            f"Per-task gradient clipping with a loss-based weighting needs shared features; "
            f"architecture {type(model.architecture).__name__} has none. Use a gradient-based "
            "weighting, or no clipping.")
    shared_vars = list(model.shared_variables)
    shared_ids = {id(v) for v in shared_vars}
    other_vars = [v for v in model.trainable_variables if id(v) not in shared_ids]
    scale = _loss_scale(model)
    mask = controls_lib.task_mask(model)  # (T,)
    clip_values = model.training_controls.clip_values

    with tf.GradientTape(persistent=True) as tape:
        features, leaves, outputs = model.feature_split.run(images, tape, training=True)
        task_losses, task_present = losses_lib.separate_task_losses(
            model.tasks, targets, outputs, sample_weights)
        losses, present = ops.stack(task_losses), ops.stack(task_present)  # (T,), (T,)
        total = model.weighting(losses, present * mask, training=True)
        scaled_total = total * scale
        regularization = _regularization(model)

    task_weights = gradients_or_zeros(tape, total, [losses])[0]  # (T,) d total / d L_t
    sources = leaves + other_vars
    combined = gradients_or_zeros(tape, scaled_total, leaves) + tape.gradient(scaled_total,
                                                                               other_vars)
    for index, task in enumerate(model.tasks):
        if clip_values[index] is None or task.name not in targets:
            continue
        # The gradient of w_t L_t (w_t held): L_t's with w_t as its output gradient.
        contribution = tape.gradient(task_losses[index], sources,
                                     output_gradients=task_weights[index] * scale)
        clipped = controls_lib.clip_task_gradient(model, index, contribution, scale)
        combined = [add_gradients(c, None if g is None else k - g)
                    for c, k, g in zip(combined, clipped, contribution)]

    shared_grads = (gradients_or_zeros(tape, features, shared_vars,
                                       output_gradients=combined[:len(leaves)])
                    if shared_vars else [])
    variables = shared_vars + other_vars
    # `None` (a head of a task absent from the batch) leaves the variable untouched.
    gradients = list(shared_grads) + combined[len(leaves):]
    if regularization is not None:
        extra = tape.gradient(regularization * scale, variables)
        gradients = [add_gradients(g, e) for g, e in zip(gradients, extra)]
        total = total + regularization
    del tape
    apply_gradients(model, gradients, variables)
    return StepResult(total, losses, present, outputs)


def _check_balancing(model):
    """`(shared_vars, rep_grad)`, warning (at trace time) where nothing can be balanced."""
    weighting = model.weighting
    shared_vars = list(model.shared_variables)
    if not shared_vars:
        warnings.warn(
            f"{type(weighting).__name__}: the model has no shared trainable parameters "
            f"(architecture {type(model.architecture).__name__}, or a frozen "
            "trunk), so there is nothing to balance; every parameter gets its own tasks' "
            "gradients (the plain sum).", stacklevel=3)
    rep_grad = weighting.rep_grad and bool(shared_vars)
    if rep_grad and not model.shared_features:
        warnings.warn(
            f"{type(weighting).__name__}(rep_grad=True): architecture "
            f"{type(model.architecture).__name__} has no shared features; taking the gradients "
            "of the shared parameters instead.", stacklevel=3)
        rep_grad = False
    return shared_vars, rep_grad


def gradient_balanced_step(model, images, targets, sample_weights):
    """One step of a gradient-based weighting (a `GradientWeighting`).

    1. Forward pass; per-task losses `L_t` `(T,)` and presence `(T,)`.
    2. Per-task gradients of `objective_scales(L)[t] * L_t`: one backward
       pass per task (T gradient calls on one persistent tape), either to
       the shared parameters (`model.shared_variables`, flattened into a
       `(T, D)` matrix) or, with the weighting's `rep_grad=True`, only to
       the shared features (`model.shared_features`, flattened), which stops
       there and is much cheaper. An architecture without shared features
       takes the parameter gradients.
    3. `direction = weighting.aggregate(grads, losses, present)` `(D,)`.
    4. The shared parameters get `direction` (with `rep_grad=True`, it is
       back-propagated once through what computes the features). Every
       other parameter gets the sum of the per-task gradients: a task's own
       head (or attention, adapter) parameters get that task's own
       gradient. Regularisation losses add their plain gradient. Without
       shared trainable parameters there is nothing to balance: the step
       warns once and every parameter gets its own tasks' gradients.
    5. The update (`keras_mtl.training.updates.apply_gradients`).

    Gramian weightings (`weighting.gramian_weights`, without per-task
    clipping) take steps 2-4 on the Gramian path
    (`keras_mtl.training.gramian`): the per-task gradients stay one tensor
    per shared source, their `T x T` Gram matrix gives the weights
    (`weighting.weights_from_gramian`), the sources get the weighted sum,
    and the heads get the gradient of the sum of the objectives (each head
    its own task's). With `update_every=k`, k - 1 steps out of k take no
    per-task gradients: one backward pass of the weighted objective with
    the stored weights.

    A memory budget (the weighting's `task_chunk_size` or
    `jacobian_budget_mib`; `keras_mtl.training.task_chunks`) bounds the
    per-task gradients held at once: on the Gramian path the Gram matrix is
    accumulated a chunk of tasks at a time and the shared sources get one
    backward pass of the weighted objective; on the `(T, D)` path the
    per-task backward passes run a chunk at a time.

    A task without labels in the batch has zero loss, zero gradient and
    presence 0: it is left out of the aggregation.

    Mixed precision: the per-task gradients are divided by the loss scale
    before `aggregate` (the methods see true gradients) and the direction
    is multiplied by it again, because `LossScaleOptimizer.apply` unscales
    every gradient itself. When a scaled gradient overflows, the weighting
    sees every task as absent (its state is left untouched, and it logs
    weight 0 for that step) and the shared gradients are NaN, so the
    optimizer skips the step and lowers the scale; the logged loss of such
    a step is the plain sum of the task losses.

    `tf.distribute` (R > 1 replicas): before `aggregate`, the per-task
    gradients of the shared parameters are all-reduced (summed) and every
    replica aggregates the same `(T, D)` matrix, so the direction (and the
    weighting's state) is the one-device one on every replica; each replica
    hands `direction / R` to the optimizer, which sums the replicas'
    gradients. With `rep_grad=True` the rows (gradients of this replica's
    features) are all-gathered along D instead, the direction of the global
    batch is computed on every replica and each replica back-propagates its
    own slice through the trunk. Head and regularisation gradients are the
    replica's own (divided by R), summed by the optimizer.
    """
    weighting = model.weighting
    shared_vars, rep_grad = _check_balancing(model)
    excluded = {id(v) for v in shared_vars} | {id(v) for v in weighting.variables}
    head_vars = [v for v in model.trainable_variables if id(v) not in excluded]
    context = distribute.replica_context()  # None on one device
    replicas = distribute.num_replicas()
    scale = _loss_scale(model)
    mask = controls_lib.task_mask(model)  # (T,) tasks switched on by the curriculum
    wrap = model.per_replica_xla.wrap  # XLA per replica under tf.distribute, else identity

    with tf.GradientTape(persistent=True) as tape:
        if rep_grad:
            features, leaves, outputs = model.feature_split.run(images, tape, training=True,
                                                                wrap=wrap)
        else:
            outputs = wrap("model", lambda x: model(x, training=True))(images)
        task_losses, task_present = losses_lib.separate_task_losses(
            model.tasks, targets, outputs, sample_weights)
        losses, present = ops.stack(task_losses), ops.stack(task_present)  # (T,), (T,)
        scales = ops.stop_gradient(ops.cast(weighting.objective_scales(losses), "float32"))
        objectives = []  # None: the task is absent from the batch, no gradient at all
        for index, task in enumerate(model.tasks):
            # From the task's own scalar, not `losses[index]` (see separate_task_losses).
            objective = (task_losses[index] * task_present[index] * mask[index] * scales[index]
                         * scale / replicas)
            objectives.append(None if task.name not in targets else objective)
        regularization = _regularization(model)
        if regularization is not None:
            scaled_regularization = regularization * scale / replicas

    if rep_grad:  # shared parameters after the cut (experts on the features) are summed plainly
        shared_vars, after_cut = _split_at_cut(tape, features, shared_vars)
        head_vars = head_vars + after_cut
    sources = leaves if rep_grad else shared_vars
    if sources and gramian_lib.uses_gramian_path(model):
        shared_grads, finite = _gramian_gradients(
            model, tape, objectives, sources, losses, present * mask, scale, rep_grad, context,
            replicas, features if rep_grad else None, shared_vars)
        head_grads = _head_gradients(tape, objectives, head_vars)
    else:
        shared_grads, head_grads, finite = _per_task_gradients(
            model, tape, objectives, sources, losses, present * mask, scale, rep_grad, context,
            replicas, features if rep_grad else None, shared_vars, head_vars)

    variables = shared_vars + head_vars
    gradients = list(shared_grads) + head_grads
    if regularization is not None:
        extra = gradients_or_zeros(tape, scaled_regularization, variables)
        gradients = [g + ops.cast(e, g.dtype) for g, e in zip(gradients, extra)]
    del tape
    apply_gradients(model, gradients, variables)

    weighted = ops.sum(losses * present * ops.convert_to_tensor(weighting.current_weights()))
    total = ops.where(finite, weighted, ops.sum(losses * present))  # a skipped step logs the sum
    if regularization is not None:
        total = total + regularization
    return StepResult(total, losses, present, outputs)


def _split_at_cut(tape, features, shared_vars):
    """`(before, after)`: the shared variables the shared features depend on, and the others.

    A `rep_grad` direction is back-propagated from the features, so it reaches only the
    variables before the cut. Shared variables after it (the experts that `mmoe`, `cgc`, `ple`
    and `dselect_k` put on the trunk's levels, the later stages that several `branched` tasks
    share) get, as the `SharedParts` contract says, the plain sum of their tasks' gradients.
    Only whether a gradient exists is read, at trace time; in a compiled step the gradient
    ops themselves feed nothing and are pruned, so this costs no backward pass per step.
    """
    connected = tape.gradient(features, shared_vars,
                              unconnected_gradients=tf.UnconnectedGradients.NONE)
    before = [v for v, g in zip(shared_vars, connected) if g is not None]
    after = [v for v, g in zip(shared_vars, connected) if g is None]
    return before, after


def _gramian_gradients(model, tape, objectives, sources, losses, present, scale, rep_grad,
                       context, replicas, features, shared_vars):
    """The Gramian path (`keras_mtl.training.gramian`): `(shared_grads, finite)`."""
    source_grads, finite = gramian_lib.gramian_shared_gradients(
        model, tape, objectives, sources, ops.stop_gradient(losses), present, scale, rep_grad,
        context, replicas)
    if not rep_grad:
        return source_grads, finite
    return gradients_or_zeros(tape, features, shared_vars, output_gradients=source_grads), finite


def _head_gradients(tape, objectives, head_vars):
    """Each head's gradient of the sum of the present objectives (a head sees its own task)."""
    present = [objective for objective in objectives if objective is not None]
    if not head_vars or not present:
        return [ops.zeros_like(v) for v in head_vars]
    # A list target: the sum of the objectives' gradients (the tape has stopped recording).
    return [ops.cast(g, v.dtype) for g, v in
            zip(gradients_or_zeros(tape, present, head_vars), head_vars)]


def _per_task_gradients(model, tape, objectives, sources, losses, present, scale, rep_grad,
                        context, replicas, features, shared_vars, head_vars):
    """The `(T, D)` path: `(shared_grads, head_grads, finite)` via `weighting.aggregate`."""
    weighting = model.weighting
    # A memory budget (task_chunks): the backward passes of one chunk of tasks wait for the
    # rows of the chunk before.
    chunk = task_chunks.chunk_size(len(objectives), task_chunks.static_row_size(sources),
                                   weighting.task_chunk_size, weighting.jacobian_budget_mib)
    # --- per-task gradients: one backward pass per task ------------------------------
    rows, head_grads = [], [ops.zeros_like(v) for v in head_vars]
    waits, current = [], []
    for index, objective in enumerate(objectives):
        if index % chunk == 0:
            waits, current = current, []
        if objective is None:
            rows.append(None)
            continue
        with task_chunks.ordered_after(waits):
            task_grads = gradients_or_zeros(tape, objective, sources + head_vars)
        task_grads = controls_lib.clip_task_gradient(model, index, task_grads, scale)
        rows.append(flatten_rows(task_grads[:len(sources)]) if sources else None)
        current.append(rows[-1])
        head_grads = [a + ops.cast(b, a.dtype)
                      for a, b in zip(head_grads, task_grads[len(sources):])]

    shared_grads = [ops.zeros_like(v) for v in shared_vars]
    finite = ops.convert_to_tensor(True)
    computed = [row for row in rows if row is not None]
    if sources and computed:
        zero_row = ops.zeros_like(computed[0])
        grads = ops.stack([zero_row if row is None else row for row in rows]) / scale  # (T, D)
        if context is not None:
            if rep_grad:  # (T, D_global): every replica's feature gradients
                grads, offset, size = distribute.all_gather_rows(context, grads)
            else:  # (T, D): the global batch's per-task gradients
                grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        finite = ops.all(ops.isfinite(grads))
        grads = ops.where(finite, grads, 0.0)
        direction = weighting.aggregate(
            grads, ops.stop_gradient(losses), present * ops.cast(finite, "float32"))  # (D,)
        direction = ops.where(finite, direction, float("nan")) * scale  # a skipped step
        if context is not None:
            if rep_grad:  # this replica's features only
                direction = direction[offset:offset + size]
            else:  # the same on every replica; the optimizer sums R copies
                direction = direction / replicas
        if rep_grad:
            shared_grads = gradients_or_zeros(tape, features, shared_vars,
                                              output_gradients=split_like(direction, features))
        else:
            shared_grads = split_like(direction, shared_vars)
    return shared_grads, head_grads, finite
