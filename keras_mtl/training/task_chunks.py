"""A memory budget for the per-task gradients: the Gramian a chunk of tasks at a time.

The gradient-balanced step holds the T per-task gradients of the shared
parameters (D entries each) or, with `rep_grad`, of the shared features
(B x features each): a `(T, D)` matrix that grows with T and, for
rep_grad, with the batch. At T = 64 on a real trunk it can exceed
everything else the step holds. `GradientWeighting(task_chunk_size=c)` or
`GradientWeighting(jacobian_budget_mib=m)` bounds it:

- Gramian methods (`gramian_weights = True`): the `T x T` Gramian is
  accumulated block by block. For each chunk A of c tasks, its gradients
  `J_A` `(c, D)` give the diagonal block `J_A J_A^T`; then every later task
  j, one at a time, gives the column `J_A g_j`. At most c + 1 tasks'
  gradients are alive at once: the blocks run one after another, ordered
  by control dependencies and, for XLA (which drops those and would merge
  the recomputed gradients with the first ones), by a data dependency (each
  block's output gradient is an exact 1.0 computed from the block before).
  Measured (`benchmarks/task_chunks.py`, T = 64, D = 2^20, CPU): peak
  512 MiB unchunked, 64 MiB with c = 8 (128 MiB under XLA). The shared
  parameters then get one backward pass of `sum_t w_t L_t`
  (`gramian.weighted_gradients`), so the per-task gradients are never
  kept. The price is recomputation: with K = ceil(P / c) chunks of the P
  tasks present, `P (K + 1) / 2` per-task backward passes instead of P,
  plus the weighted one. With rep_grad a per-task pass goes through the
  heads only, which is cheap; with parameter gradients it goes through the
  trunk, so give such a model the budget it can afford. Ordering the
  blocks also gives up running independent backward passes in parallel.
- Methods that need the `(T, D)` matrix itself (`aggregate`): it is held
  whole, and the budget only runs the per-task backward passes a chunk at
  a time (`ordered_after`), so their buffers are not all alive together.

`chunk_size` turns the arguments into c: `task_chunk_size` as given, else
the largest c whose c + 1 float32 rows fit `jacobian_budget_mib` (default
`AUTO_BUDGET_MIB`); no chunking (c = P) while all P rows fit. The result
is the unchunked Gramian up to float32 rounding (each entry is the same
dot product; `tests/training/test_task_chunks.py` checks 1e-5).

Example:

>>> weighting = keras_mtl.weighting.get("mgda", rep_grad=True, task_chunk_size=8)
>>> weighting.get_config()["task_chunk_size"]  # model.compile/fit as usual
8
>>> from keras_mtl.training import task_chunks
>>> task_chunks.chunk_size(64, row_size=2**20, jacobian_budget_mib=40)  # 10 rows of 4 MiB
9
>>> x = tf.constant([1.0, 2.0])
>>> with tf.GradientTape(persistent=True) as tape:
...     tape.watch(x)
...     objectives = [x[0] * 3.0, None, x[1] * 4.0, tf.reduce_sum(x)]  # None: absent
>>> task_chunks.chunked_gramian(tape, objectives, [x], chunk=1)
<tf.Tensor: shape=(4, 4), dtype=float32, numpy=
array([[ 9.,  0.,  0.,  3.],
       [ 0.,  0.,  0.,  0.],
       [ 0.,  0., 16.,  4.],
       [ 3.,  0.,  4.,  2.]], dtype=float32)>
"""

import contextlib
import math

import tensorflow as tf
from keras import ops

from keras_mtl.training.gradients import gradients_or_zeros

#: The budget (MiB) of the per-task gradients held at once when none is given.
AUTO_BUDGET_MIB = 1024

_FLOAT32_BYTES = 4


def static_row_size(sources):
    """The entries of one task's gradient of `sources`, or `None` if a dimension is dynamic."""
    size = 0
    for source in sources:
        shape = tuple(source.shape)
        if None in shape:  # a feature map whose batch size is known only at run time
            return None
        size += math.prod(shape)
    return size


def chunk_size(num_tasks, row_size, task_chunk_size=None, jacobian_budget_mib=None):
    """How many tasks' gradients a chunk holds.

    Args:
        num_tasks: P, the tasks whose gradients are computed.
        row_size: D, the entries of one task's gradient (`static_row_size`),
            or `None` when unknown until run time.
        task_chunk_size: a given chunk size (clipped to [1, P]); wins over
            the budget.
        jacobian_budget_mib: the memory for the per-task gradients held at
            once, in MiB of float32 rows; `None`: `AUTO_BUDGET_MIB`.

    Returns:
        c in [1, P]; P means no chunking.

    Raises:
        ValueError: an explicit budget with a row size unknown until run
            time (give `task_chunk_size` instead).
    """
    if num_tasks < 1:
        return 1
    if task_chunk_size is not None:
        return max(1, min(int(task_chunk_size), num_tasks))
    if row_size is None:
        if jacobian_budget_mib is not None:
            raise ValueError(
                "jacobian_budget_mib needs the size of a task's gradient when the step is traced, "
                "but it has a dynamic dimension (rep_grad with a batch size unknown until run "
                "time): give task_chunk_size instead, or batches of a fixed size "
                "(drop_remainder=True).")
        return num_tasks
    budget = (AUTO_BUDGET_MIB if jacobian_budget_mib is None else jacobian_budget_mib) * 2**20
    rows = int(budget // (max(row_size, 1) * _FLOAT32_BYTES))  # float32 rows that fit
    if rows >= num_tasks:
        return num_tasks
    return max(1, rows - 1)  # a chunk plus the one task streamed past it


def ordered_after(tensors):
    """A context in which new ops wait for `tensors` (none: no ordering)."""
    tensors = [t for t in tensors if t is not None]
    return tf.control_dependencies(tensors) if tensors else contextlib.nullcontext()


def _flat(jacobians, scale):
    """`[(n, *shape)]` -> `(n, D)` float32 divided by `scale`, the sources side by side."""
    return ops.concatenate([ops.reshape(ops.cast(j, "float32"), (ops.shape(j)[0], -1)) / scale
                            for j in jacobians], axis=1)


def chunked_gramian(tape, objectives, sources, chunk, scale=1.0, reduce=None):
    """`(T, T)` float32 Gramian of the per-task gradients, a chunk of tasks at a time.

    Equals `gramian.gramian(gramian.per_task_gradients(tape, objectives,
    sources), scale)` up to float32 rounding, holding at most `chunk + 1`
    tasks' gradients at once (see the module docstring for the cost).

    Args:
        tape: a persistent `tf.GradientTape` that recorded the objectives.
        objectives: list of T scalars, `None` for a task absent from the
            batch (its row and column are zero; no backward pass).
        sources: the variables or watched tensors.
        chunk: c, the tasks per chunk (`chunk_size`).
        scale: the loss scale the objectives carry (1 without mixed
            precision).
        reduce: `None`, or a function applied to each list of per-source
            gradients before use (the all-reduce of the replicas' parameter
            gradients under `tf.distribute`).

    Returns:
        `(T, T)` float32.
    """
    num_tasks = len(objectives)
    computed = [index for index, objective in enumerate(objectives) if objective is not None]
    if not computed:
        return ops.zeros((num_tasks, num_tasks), "float32")
    reduce = reduce or (lambda jacobians: jacobians)

    def rows(indices, last):  # (n, D)
        # Exactly 1.0, but computed from the block before: under XLA (which drops control
        # dependencies) this orders the blocks and keeps the recomputed gradients from
        # being merged with their first computation.
        gate = None if last is None else 1.0 + 0.0 * ops.sum(last)
        task_grads = [gradients_or_zeros(tape, objectives[i], sources, output_gradients=(
            None if gate is None else ops.cast(gate, objectives[i].dtype))) for i in indices]
        jacobians = [ops.stack([g[k] for g in task_grads]) for k in range(len(sources))]
        return _flat(reduce(jacobians), scale)

    count = len(computed)
    entries, positions, last = [], [], None
    for start in range(0, count, chunk):
        anchor_ids = computed[start:start + chunk]
        with ordered_after([last]):
            anchor = rows(anchor_ids, last)  # (c, D)
            block = ops.matmul(anchor, ops.transpose(anchor))  # (c, c)
        last = block
        entries.append(ops.reshape(block, (-1,)))
        positions += [(a, b) for a in anchor_ids for b in anchor_ids]
        for other in computed[start + chunk:]:
            with ordered_after([last]):
                column = ops.matmul(anchor, ops.transpose(rows([other], last)))  # (c, 1)
            last = column
            column = ops.reshape(column, (-1,))  # (c,)
            entries += [column, column]  # G[a, j] and G[j, a]
            positions += [(a, other) for a in anchor_ids] + [(other, a) for a in anchor_ids]
    values = ops.concatenate(entries, axis=0)  # (P * P,)
    return ops.scatter(ops.convert_to_tensor(positions, "int32"), values,
                       (num_tasks, num_tasks))
