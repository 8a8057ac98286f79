"""Per-task losses of a batch: presence, and global-batch losses under a strategy.

A task absent from the batch's targets has loss 0 and presence 0 (it is
masked, not an error). On one device a task's loss is its mean over the
batch's labelled elements (`task.compute_loss`). Under a `tf.distribute`
strategy with R > 1 replicas it is the mean over the labelled elements of
the *global* batch, the one-device value: see `global_task_losses`.
"""

import tensorflow as tf
from keras import ops

from keras_mtl import distribute


def _zero():
    return ops.zeros((), "float32")


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


def local_loss_parts(tasks, targets, outputs, sample_weights):
    """`(T, 3)` float32: each task's `(loss_sum, normaliser, count)` on this
    replica's batch, zeros for a task absent from `targets` (see
    `task_loss_parts`)."""
    rows = []
    for task in tasks:
        if task.name not in targets:
            rows.append(ops.zeros((3,), "float32"))
            continue
        rows.append(ops.stack(task_loss_parts(task, targets[task.name], outputs[task.name],
                                              sample_weights.get(task.name))))
    return ops.stack(rows)  # (T, 3)


def _global_totals(parts):
    """`(T, 3)` sums of every replica's stopped `parts` (one all-reduce), and R."""
    context = distribute.replica_context()
    parts = tf.stop_gradient(ops.cast(parts, "float32"))
    if context is None:
        return parts, 1.0
    return (context.all_reduce(tf.distribute.ReduceOp.SUM, parts),
            float(context.num_replicas_in_sync))


def _global_loss(total, replicas, local_sum):
    """The global mean `total[0] / N` with the gradient of R x this replica's share.

    Its value is `L = sum_r S_r / N` and its gradient is `R` times the
    gradient of `S_local / N` (`stop_gradient(L - R share) + R share`): the
    step divides its objective by R (`distribute.scale_for_replicas`) and
    the optimizer sums the replicas' gradients, which gives the one-device
    gradient for any weighting, linear or not in the losses.
    """
    normaliser = ops.where(total[1] > 0, total[1], 1.0)
    share = replicas * local_sum / normaliser
    return tf.stop_gradient(total[0] / normaliser - share) + share


def global_task_losses(parts):
    """The global batch's losses `(T,)` and presence `(T,)` from this
    replica's `local_loss_parts` `(T, 3)`.

    The replicas' loss sums, normalisers and label counts are all-reduced
    (one `all_reduce` for all tasks), so every replica gets the same losses
    and presence, equal to the one-device ones, and the weighting's state is
    updated identically on all replicas. On one device: the one-replica
    values.
    """
    parts = ops.cast(parts, "float32")  # (T, 3)
    total, replicas = _global_totals(parts)
    losses = [_global_loss(total[index], replicas, parts[index, 0])
              for index in range(parts.shape[0])]
    return ops.stack(losses), ops.cast(total[:, 2] > 0, "float32")  # (T,), (T,)


def separate_task_losses(tasks, targets, outputs, sample_weights):
    """Each task's loss as its own scalar: `(losses, present)`, lists of T scalars.

    Each loss depends only on its own task's output, so that the backward
    pass of task t reaches head t only (the gradient of a slice of a stacked
    vector would send zeros back through every other head). A task absent
    from `targets` gets loss 0 and presence 0. Under R > 1 replicas the
    losses are the global batch's, with one all-reduce for all tasks.
    """
    if distribute.replica_context() is None:
        losses, present = [], []
        for task in tasks:
            if task.name not in targets:
                losses.append(_zero())
                present.append(_zero())
                continue
            loss, count = task.compute_loss(targets[task.name], outputs[task.name],
                                            sample_weights.get(task.name))
            losses.append(ops.cast(loss, "float32"))
            present.append(ops.cast(count > 0, "float32"))
        return losses, present
    own = [None if task.name not in targets
           else task_loss_parts(task, targets[task.name], outputs[task.name],
                                sample_weights.get(task.name)) for task in tasks]
    zeros = (_zero(),) * 3
    total, replicas = _global_totals(ops.stack([ops.stack(p or zeros) for p in own]))
    losses = [_zero() if parts is None else _global_loss(total[index], replicas, parts[0])
              for index, parts in enumerate(own)]
    present = [ops.cast(total[index, 2] > 0, "float32") for index in range(len(tasks))]
    return losses, present


def task_losses(tasks, targets, outputs, sample_weights):
    """Per-task losses `(T,)` and presence `(T,)` (1.0 where labelled); see
    `separate_task_losses`."""
    losses, present = separate_task_losses(tasks, targets, outputs, sample_weights)
    return ops.stack(losses), ops.stack(present)
