"""Inter-task affinity (TAG): does a step on one task's loss help another task?"""

import functools
import itertools

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_mtl.analysis.task_gradients import gradient_statistics, preserving_state
from keras_mtl.analysis.task_gradients import task_gradients
from keras_mtl.data.checks import unpack_batch


def lookahead_affinity(model, images, targets, sample_weights, learning_rate):
    """The lookahead inter-task affinity of one batch, `(T, T)` (graph code).

    For every task i, the shared parameters take one SGD step on task i's
    loss alone, `theta_s' = theta_s - lr * grad_s L_i` (the heads are left
    as they are), and for every task j

        Z[i, j] = 1 - L_j(batch; theta_s', theta_j) / L_j(batch; theta_s, theta_j)

    on the same batch (Fifty et al., "Efficiently Identifying Task
    Groupings for Multi-Task Learning", NeurIPS 2021, eq. 1-2). Z[i, j] > 0:
    the step on i lowered j's loss. The step is applied to the trunk's
    variables in place, evaluated and undone (their values and the
    BatchNorm statistics are restored exactly): no copy of the model.

    Args:
        model: a `MultiTaskModel`.
        images, targets, sample_weights: one batch (targets and weights are
            dicts by task name).
        learning_rate: scalar, the lookahead step size.

    Returns:
        `(affinity, cosine, grad_norm)`: `(T, T)` affinity (NaN where task
        i or j has no labels in the batch), and the cosine matrix `(T, T)`
        and norms `(T,)` of the per-task gradients of the shared parameters.
    """
    shared = list(model.shared_variables)
    num_tasks = len(model.tasks)

    def measure():
        grads, losses, present, shared_grads = task_gradients(
            model, images, targets, sample_weights, on="parameters")
        cosine, norms = gradient_statistics(grads, present)
        originals = [tf.identity(v.value if isinstance(v, keras.Variable) else v) for v in shared]
        rows = []
        for source in range(num_tasks):
            for variable, gradient in zip(shared, shared_grads[source]):
                variable.assign_sub(ops.cast(learning_rate * gradient, variable.dtype))
            after, _ = model.task_losses(targets, model(images, training=True), sample_weights)
            rows.append(after)  # (T,): every task's loss after the step on `source`
            with tf.control_dependencies([after]):
                for variable, value in zip(shared, originals):
                    variable.assign(value)
        after = ops.stack(rows)  # (T_source, T_target)
        valid = ops.logical_and(
            ops.expand_dims(present > 0.5, 1),
            ops.expand_dims(ops.logical_and(present > 0.5, losses > 0.0), 0))  # (T, T)
        before = ops.where(valid, ops.expand_dims(losses, 0), 1.0)
        affinity = ops.where(valid, 1.0 - after / before, float("nan"))
        return affinity, cosine, norms

    return preserving_state(model, measure)


def _batches(data):
    if isinstance(data, tf.data.Dataset):
        return iter(data.repeat())
    if isinstance(data, (tuple, list)):
        batch = tf.nest.map_structure(tf.convert_to_tensor, tuple(data))
        return itertools.repeat(batch)
    raise ValueError("data must be a tf.data.Dataset of batches or one batch "
                     f"(images, targets[, sample_weights]), got {type(data).__name__}.")


def current_learning_rate(model):
    """The optimizer's learning rate at its current step, as a float."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError("The model is not compiled: pass learning_rate, or compile it first.")
    return float(ops.convert_to_numpy(optimizer.learning_rate))


def task_affinity(model, data, steps=100, interval=1, learning_rate=None, train=True,
                  verbose=0, return_details=False):
    """Inter-task affinity averaged over a short training run (TAG).

    Runs `steps` training steps of `model` on `data` (with `train=True`;
    the model is changed as by `fit`) and, before every `interval`-th step,
    measures the lookahead affinity matrix on that step's batch
    (`lookahead_affinity`); returns the mean over the measurements (the
    paper measures at every step of the first epochs and averages).

    `affinity[i, j]` is the relative drop of task j's loss after a step on
    task i's loss alone: positive where i helps j, negative where it hurts.
    The diagonal, a task's effect on itself, is positive for small steps.
    `keras_mtl.analysis.propose_groups` turns the matrix into groupings.

    Args:
        model: a `MultiTaskModel`, compiled when `train=True` or when
            `learning_rate` is None.
        data: a `tf.data.Dataset` of batches (read in turn, repeated) or
            one batch `(images, targets[, sample_weights])`.
        steps: training steps (batches) of the run.
        interval: measure before every `interval`-th step.
        learning_rate: the lookahead SGD step size; default the
            optimizer's current learning rate, read at each measurement.
        train: train on each batch (False: only measure, model unchanged).
        verbose: 1 prints progress.
        return_details: return a dict instead of the matrix.

    Returns:
        The `(T, T)` numpy affinity matrix (rows: the task stepped on;
        columns: the task affected), or with `return_details=True` a dict:
        `affinity`, `affinity_steps` `(N, T, T)`, `cosine` `(T, T)` (mean
        cosine of the per-task gradients of the shared parameters),
        `conflict_fraction` (fraction of measured steps and task pairs with
        a negative cosine), `grad_norm` `(T,)`, `task_names`, `steps`.

    Example:

    ```python
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    affinity = task_affinity(model, train_ds, steps=50, interval=5)
    keras_mtl.analysis.propose_groups(affinity, 2, model.task_names)
    ```
    """
    if int(steps) < 1 or int(interval) < 1:
        raise ValueError(f"steps and interval must be >= 1, got {steps} and {interval}.")
    if train and getattr(model, "optimizer", None) is None:
        raise ValueError("train=True needs a compiled model.")
    names = list(model.task_names)
    function = tf.function(functools.partial(lookahead_affinity, model), reduce_retracing=True)
    batches = _batches(data)
    affinities, cosines, norms, measured = [], [], [], []
    for step in range(int(steps)):
        images, targets, sample_weights = unpack_batch(tuple(next(batches)), names)
        if step % int(interval) == 0:
            rate = current_learning_rate(model) if learning_rate is None else learning_rate
            affinity, cosine, norm = function(images, targets, sample_weights,
                                              tf.constant(rate, "float32"))
            affinities.append(np.asarray(affinity))
            cosines.append(np.asarray(cosine))
            norms.append(np.asarray(norm))
            measured.append(step)
        if train:
            model.train_on_batch(images, targets, sample_weights or None)
        if verbose and (step + 1) % max(1, int(steps) // 10) == 0:
            print(f"task_affinity: step {step + 1}/{steps}, {len(measured)} measurements")
    affinity = _nanmean(np.stack(affinities))
    if not return_details:
        return affinity
    cosines = np.stack(cosines)
    pairs = [cosines[:, a, b] for a, b in itertools.combinations(range(len(names)), 2)]
    signs = np.concatenate(pairs) if pairs else np.zeros((0,))
    signs = signs[np.isfinite(signs)]
    return {
        "affinity": affinity,
        "affinity_steps": np.stack(affinities),
        "cosine": _nanmean(cosines),
        "conflict_fraction": float((signs < 0).mean()) if signs.size else float("nan"),
        "grad_norm": _nanmean(np.stack(norms)),
        "task_names": names,
        "steps": measured,
    }


def _nanmean(values):
    """Mean over axis 0 ignoring NaN (NaN where every value is NaN), without warnings."""
    finite = np.isfinite(values)
    counts = finite.sum(axis=0)
    total = np.where(finite, values, 0.0).sum(axis=0)
    return np.where(counts > 0, total / np.maximum(counts, 1), np.nan)
