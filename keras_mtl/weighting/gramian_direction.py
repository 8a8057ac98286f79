"""The direction of a Gramian method: `sum_t w_t g_t`, with `w` computed from `G = J J^T`."""

from keras_mtl.weighting import solvers


def direction_from_gramian_weights(weighting, grads, losses, present):
    """`(direction (D,), logged weights (T,))` of a weighting whose coefficients
    depend on the task gradients `grads` `(T, D)` only through their Gram
    matrix: it implements `compute_gramian_weights(gram, losses, present)`
    (and sets `gramian_weights = True`), so a train step that has only the
    `T x T` Gram matrix can ask it for the coefficients directly.
    """
    gram = solvers.gram_matrix(grads)  # (T, T)
    coefficients, weights = weighting.compute_gramian_weights(gram, losses, present)  # (T,), (T,)
    return solvers.combine(coefficients, grads), weights
