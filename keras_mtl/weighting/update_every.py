"""Weights recomputed every k steps: `GradientWeighting(update_every=k)`.

Nash-MTL's reference code (Navon et al., ICML 2022,
`methods/weight_methods.py`, `update_weights_every`) solves for its task
weights only every k steps and reuses them in between. Any method whose
direction is `sum_t w_t g_t` with `w` computed from the Gram matrix (a
Gramian method, `gramian_weights = True`) can be amortised that way: in a
step that reuses the weights the train step back-propagates the weighted
loss `sum_t w_t L_t` once, with no per-task gradients at all, at the cost
of equal weighting.

State (saved and restored with the model, so a run resumed mid-cycle
goes on where it stopped):

- `weight_updates_seen`: the calls counted so far (float32 scalar); the
  weights are recomputed when it is a multiple of k.
- `reused_coefficients`: `(T,)` the coefficients of the last update.

A call whose recomputation saw non-finite gradients (a loss-scale
overflow under mixed precision) stores nothing and does not advance the
count, so the next call recomputes. A task absent from a reusing step
simply has no loss; the others keep their stored weights (they are not
renormalised).

Everything is tensor code (`ops.cond` on the count), compilable with XLA.

Example:

>>> weighting = keras_mtl.weighting.get("mgda", update_every=3)
>>> first = weighting.aggregate(np.array([[1.0, 0.0], [0.0, 2.0]], "float32"))
>>> weighting.aggregate(np.array([[1.0, 0.0], [0.0, 1.0]], "float32"))  # reuses (0.8, 0.2)
<tf.Tensor: shape=(2,), dtype=float32, numpy=array([0.8, 0.2], dtype=float32)>
"""

from keras import ops


def build_state(weighting, num_tasks):
    """Creates the count and the stored coefficients on `weighting`."""
    weighting.weight_updates_seen = weighting.add_weight(
        shape=(), initializer="zeros", trainable=False, name="weight_updates_seen")
    weighting.reused_coefficients = weighting.add_weight(
        shape=(num_tasks,), initializer="zeros", trainable=False, name="reused_coefficients")


def is_due(weighting):
    """Boolean scalar: this call recomputes the weights (always with k = 1)."""
    if weighting.update_every == 1:
        return ops.convert_to_tensor(True)
    count = ops.convert_to_tensor(weighting.weight_updates_seen)
    return ops.equal(ops.mod(count, float(weighting.update_every)), 0.0)


def stored(weighting):
    """`(T,)` the coefficients of the last update."""
    return ops.convert_to_tensor(weighting.reused_coefficients)


def record(weighting, coefficients, due, finite=True):
    """After a call: stores fresh `coefficients` and advances the count.

    Args:
        coefficients: `(T,)` the coefficients used in this call.
        due: `is_due(weighting)` of this call.
        finite: scalar bool; `False` (an overflowing recomputation) stores
            nothing and leaves the count, so the next call recomputes.
    """
    if weighting.update_every == 1:
        return
    finite = ops.convert_to_tensor(finite)
    keep = ops.logical_and(due, finite)
    weighting.reused_coefficients.assign(
        ops.where(keep, coefficients, ops.convert_to_tensor(weighting.reused_coefficients)))
    advance = ops.logical_or(ops.logical_not(due), finite)
    weighting.weight_updates_seen.assign_add(ops.cast(advance, "float32"))


def amortized(weighting, compute):
    """`compute()` `(T,)` when due, else the stored coefficients; then `record`."""
    due = is_due(weighting)
    coefficients = ops.cond(due, compute, lambda: stored(weighting))
    record(weighting, coefficients, due)
    return coefficients
