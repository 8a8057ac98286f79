"""The Gramian path of the gradient-balanced step.

Most gradient-balancing methods (MGDA, UPGrad, IMTL-G, CAGrad, Nash-MTL,
Aligned-MTL, PCGrad, GradVac, GradNorm, the calibrated balancing) return a
direction `sum_t w_t g_t` whose coefficients `w` depend on the per-task
gradients only through their `T x T` Gram matrix `G = J J^T`
(`GradientWeighting.gramian_weights`). TorchJD's "autogram" engine
(Quinton and Rey, "Jacobian Descent for Multi-Objective Optimization",
2024; `torchjd/autogram/`) builds on the same fact. For these methods
`gramian_shared_gradients`:

1. takes the per-task gradients of the shared parameters (or, with
   `rep_grad`, of the shared features) as one `(T, *shape)` tensor per
   source: a loop of T `tape.gradient` calls or one vectorised
   `tape.jacobian` (`pfor`), chosen by `vectorize_jacobian`;
2. forms `G` from the rows side by side (one `(T, D)` product, divided by
   the loss scale; see `gramian` for why not a per-source sum);
3. gets `w = weighting.weights_from_gramian(G, losses, present)`;
4. combines the per-task gradients with `w` source by source (rep_grad:
   back-propagates the combination of the feature gradients through the
   trunk once).

With a memory budget (`task_chunk_size`, `jacobian_budget_mib` on the
weighting; `keras_mtl.training.task_chunks`) that the T per-task gradients
exceed, steps 1-2 accumulate `G` a chunk of tasks at a time and step 4 is
one backward pass of `sum_t w_t L_t` instead.

Unlike autogram, the Gramian is formed from the per-task gradients, not
layer by layer from activations and output gradients: autogram refuses
BatchNorm, which every trunk here contains. So at every recomputation the
T backward passes remain; the saving is the aggregation on `(T, D)` (the
direction is combined source by source, not split back), and, with `update_every=k`, k - 1 steps out of k that take
one backward pass of `sum_t w_t L_t` with the stored weights and no
per-task gradients at all.

The results equal those of `aggregate` on the flattened `(T, D)` matrix
(`tests/training/test_gramian.py`; chunked: `tests/training/test_task_chunks.py`).
"""

import keras
import tensorflow as tf
from keras import ops

from keras_mtl.training import task_chunks
from keras_mtl.training.gradients import gradients_or_zeros
from keras_mtl.weighting import update_every as update_every_lib

#: `vectorize_jacobian` takes `tape.jacobian` (pfor) from this many present tasks on.
#: Never by default: on the 2-core CPU it was not faster than the loop (tiny_resnet, 64 px,
#: batch 16, T = 8, MGDA, interleaved: parameter gradients 6.9x `equal` against 6.4x for
#: the loop; rep_grad 1.60x against 1.56x). Not measured on a GPU.
VECTORIZE_FROM_TASKS = 2**31 - 1


def uses_gramian_path(model):
    """Whether `model`'s gradient step takes the Gramian path.

    Gramian weightings do, unless per-task gradient clipping
    (`compile(clip_task_gradients=...)`) needs each task's gradient."""
    controls = model.training_controls
    return (bool(getattr(model.weighting, "gramian_weights", False))
            and not (controls is not None and controls.clips))


def vectorize_jacobian(num_present, rep_grad):
    """Whether to take the per-task gradients in one vectorised backward pass.

    `tape.jacobian` with `pfor` (one vectorised backward pass of the `(T,)`
    objectives) against a loop of T `tape.gradient` calls: the first from
    `VECTORIZE_FROM_TASKS` present tasks on (measured; see there). Set it
    to 1 to vectorise always (`benchmarks/many_tasks.py --jacobian`)."""
    del rep_grad
    return num_present >= VECTORIZE_FROM_TASKS


def _zeros(source):
    return tf.zeros_like(source) if isinstance(source, tf.Tensor) else ops.zeros(source.shape,
                                                                                  source.dtype)


def per_task_gradients(tape, objectives, sources, vectorize=None):
    """`[(T, *source.shape)]`: the gradient of each objective, one tensor per source.

    Args:
        tape: a persistent `tf.GradientTape` that recorded the objectives.
        objectives: list of T scalars, `None` for a task absent from the
            batch (zero gradient, no backward pass).
        sources: the variables or watched tensors.
        vectorize: `True`: one `tape.jacobian(..., experimental_use_pfor=True)`;
            `False`: a loop of `tape.gradient`; `None`: `vectorize_jacobian`.
    """
    present = [objective for objective in objectives if objective is not None]
    if vectorize is None:
        vectorize = vectorize_jacobian(len(present), rep_grad=False)
    if vectorize and present:
        with tape:  # re-entered: the stacking must be recorded
            stacked = tf.stack([tf.zeros((), present[0].dtype) if objective is None
                                else objective for objective in objectives])  # (T,)
        # The TensorFlow variables behind Keras variables (pfor needs tf.Variable sources).
        tf_sources = [s.value if isinstance(s, keras.Variable) else s for s in sources]
        jacobians = tape.jacobian(stacked, tf_sources, experimental_use_pfor=True,
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return list(jacobians)
    rows = [[_zeros(s) for s in sources] if objective is None
            else gradients_or_zeros(tape, objective, sources) for objective in objectives]
    return [ops.stack([row[index] for row in rows]) for index in range(len(sources))]


def gramian(jacobians, scale=1.0):
    """`(T, T)` float32 `J J^T / scale^2`, `J` the sources' `(T, *shape)` flattened side by side.

    One product over the concatenated rows, rounded as the `(T, D)` path rounds it: a sum
    of per-source products moved IMTL's two-replica run (`tests/test_distribute.py`) by
    3e-5 from the one-device run (its solve amplifies the rounding), against 3e-8 so."""
    flat = ops.concatenate([ops.reshape(ops.cast(j, "float32"), (ops.shape(j)[0], -1)) / scale
                            for j in jacobians], axis=1)  # (T, D)
    return ops.matmul(flat, ops.transpose(flat))


def combine(weights, jacobians):
    """`[sum_t w_t J_s[t]]`: each source's combination, in the source's dtype."""
    return [ops.cast(ops.tensordot(ops.cast(weights, "float32"), ops.cast(j, "float32"), 1),
                     j.dtype) for j in jacobians]


def weighted_gradients(tape, objectives, weights, sources):
    """The gradient of `sum_t w_t objective_t` (w held) w.r.t. `sources`: one backward pass."""
    present = [(objective, ops.cast(weights[index], objective.dtype))
               for index, objective in enumerate(objectives) if objective is not None]
    if not present:
        return [_zeros(s) for s in sources]
    # The tape has stopped recording: the weights enter as the objectives' output gradients.
    return gradients_or_zeros(tape, [o for o, _ in present], sources,
                              output_gradients=[w for _, w in present])


def gramian_shared_gradients(model, tape, objectives, sources, losses, present, scale,
                             rep_grad, context=None, replicas=1):
    """The shared sources' gradients of a Gramian weighting, and `finite`.

    Args:
        model: the `MultiTaskModel` (its `weighting`).
        tape: the step's persistent tape.
        objectives: T scalars (or `None`): the scaled per-task objectives.
        sources: the shared variables, or the watched feature leaves
            (`rep_grad`).
        losses: `(T,)` the losses for the weighting (gradient stopped).
        present: `(T,)` present tasks (curriculum mask included).
        scale: the loss scale (1 without mixed precision).
        rep_grad: `sources` are the feature leaves.
        context: the replica context under `tf.distribute`, else `None`.
        replicas: R.

    Returns:
        `(gradients, finite)`: a list like `sources` (with `rep_grad`, the
        output gradient of the features; else the shared parameters'
        gradients, NaN on a step with non-finite per-task gradients), and
        the scalar bool `finite`.
    """
    weighting = model.weighting
    computed = sum(objective is not None for objective in objectives)  # backward passes
    chunk = task_chunks.chunk_size(computed, task_chunks.static_row_size(sources),
                                   weighting.task_chunk_size, weighting.jacobian_budget_mib)

    def all_reduce(jacobians):  # the global batch's per-task gradients
        return context.all_reduce(tf.distribute.ReduceOp.SUM, jacobians)

    def recompute_chunked():
        gram = task_chunks.chunked_gramian(
            tape, objectives, sources, chunk, scale,
            reduce=all_reduce if context is not None and not rep_grad else None)  # (T, T)
        if context is not None and rep_grad:  # the feature blocks of every replica
            gram = context.all_reduce(tf.distribute.ReduceOp.SUM, gram)
        finite = ops.all(ops.isfinite(gram))
        weights = weighting.weights_from_gramian(ops.where(finite, gram, 0.0), losses,
                                                 present * ops.cast(finite, "float32"))
        # One backward pass of sum_t w_t objective_t; each replica its own share, which
        # the optimizer sums.
        gradients = weighted_gradients(tape, objectives, ops.where(finite, weights,
                                                                   float("nan")), sources)
        return weights, finite, gradients

    def recompute():
        if chunk < computed:  # a memory budget the T per-task gradients exceed
            return recompute_chunked()
        jacobians = per_task_gradients(tape, objectives, sources)
        if context is not None and not rep_grad:
            jacobians = all_reduce(jacobians)
        gram = gramian(jacobians, scale)  # (T, T)
        if context is not None and rep_grad:  # the feature blocks of every replica
            gram = context.all_reduce(tf.distribute.ReduceOp.SUM, gram)
        finite = ops.all(ops.isfinite(gram))
        weights = weighting.weights_from_gramian(ops.where(finite, gram, 0.0), losses,
                                                 present * ops.cast(finite, "float32"))
        gradients = combine(ops.where(finite, weights, float("nan")), jacobians)
        if context is not None and not rep_grad:
            gradients = [g / replicas for g in gradients]  # the optimizer sums R copies
        return weights, finite, gradients

    if weighting.update_every == 1:
        _, finite, gradients = recompute()
        return gradients, finite

    due = update_every_lib.is_due(weighting)

    def reuse():
        weights = update_every_lib.stored(weighting)
        return weights, ops.convert_to_tensor(True), weighted_gradients(
            tape, objectives, weights, sources)

    weights, finite, gradients = ops.cond(due, recompute, reuse)
    update_every_lib.record(weighting, weights, due, finite)
    return gradients, finite
