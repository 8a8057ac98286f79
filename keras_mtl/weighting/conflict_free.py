"""ConFIG: the direction with equal, positive projections on every unit task gradient."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting import solvers
from keras_mtl.weighting.weighting import GradientWeighting


def pseudo_inverse_apply(gram, vector, rcond):
    """`pinv(G) v` for a symmetric positive semi-definite `G` `(T, T)` and `v` `(T,)`.

    Eigenvalues below `rcond` times the largest are taken as zero, as
    `numpy.linalg.pinv` does with singular values (`rcond` applies here to
    their squares, the eigenvalues of the Gram matrix).
    """
    eigenvalues, eigenvectors = ops.eigh(gram)  # (T,), (T, T) columns
    kept = eigenvalues > rcond * ops.maximum(ops.max(eigenvalues), 1e-30)  # (T,)
    inverse = ops.where(kept, 1.0 / ops.where(kept, eigenvalues, 1.0), 0.0)  # (T,)
    coordinates = ops.matmul(vector, eigenvectors) * inverse  # (T,)
    return ops.matmul(eigenvectors, coordinates)  # (T,)


@keras_serializable
class ConFIG(GradientWeighting):
    """Conflict-free inverse gradients (Liu, Chu and Thuerey, "ConFIG: Towards
    Conflict-free Training of Physics Informed Neural Networks", ICLR 2025,
    arXiv:2408.11104, 2024; reference code `tum-pbs/ConFIG` and TorchJD's
    `torchjd.aggregation.ConFIG`, whose behaviour this follows).

    With the unit task gradients `u_t = g_t / ||g_t||` as the rows of `U`
    (eq. 2 of the paper),

        v = pinv(U) 1,      d = (sum_t g_t . v_hat) v_hat,   v_hat = v / ||v||

    `U v = 1` when the unit gradients are linearly independent: `d` has the
    same, positive projection on every unit task gradient (no task is
    favoured and none conflicts with the update), and its length is the
    sum of the task gradients' projections on that direction. `pinv(U) 1 =
    U^T pinv(U U^T) 1` is computed from the `T x T` Gram matrix of the unit
    gradients (an eigendecomposition, eigenvalues below `rcond` times the
    largest dropped) instead of a pseudo-inverse of the `(T, D)` matrix.

    A zero gradient has no direction and, like an absent task, is left
    out (TorchJD's `nan_to_num` makes its unit row 0 too). Logged weights:
    the `w_t` of `d = sum_t w_t g_t`. Defined on any set of task gradients,
    so `rep_grad=True` is supported.

    Args:
        rcond: relative cut-off of the Gram matrix's eigenvalues in the
            pseudo-inverse.
        rep_grad: see `GradientWeighting`.

    Example:

    >>> weighting = ConFIG()
    >>> np.round(weighting.aggregate(np.array([[1.0, 0.0], [0.0, 2.0]], "float32")), 4)
    array([1.5, 1.5], dtype=float32)
    """

    def __init__(self, rcond=1e-5, rep_grad=False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        self.rcond = float(rcond)

    gramian_weights = True  # the coefficients depend on the gradients through G alone

    def compute_gramian_weights(self, gram, losses, present):
        gram = solvers.masked_gram(gram, present)  # (T, T)
        norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))  # (T,)
        usable = present * ops.cast(norms > 0.0, "float32")  # (T,)
        inverse_norms = usable / ops.where(norms > 0.0, norms, 1.0)  # (T,)
        unit_gram = gram * inverse_norms[:, None] * inverse_norms[None, :]  # (T, T) u_t . u_s
        # v = pinv(U) 1 = U^T c with c = pinv(U U^T) 1.
        coefficients = pseudo_inverse_apply(unit_gram, usable, self.rcond) * usable  # (T,) c
        squared_norm = ops.sum(coefficients * ops.matmul(unit_gram, coefficients))  # () ||v||^2
        target_norm = ops.sqrt(ops.maximum(squared_norm, 0.0))  # () ||v||
        # v_hat = J^T (c / (||g|| ||v||)): its weights on the raw gradients.
        unit_weights = coefficients * inverse_norms / ops.maximum(target_norm, 1e-30)  # (T,)
        length = ops.sum(ops.matmul(gram, unit_weights))  # () sum_t g_t . v_hat
        weights = length * unit_weights * ops.cast(target_norm > 0.0, "float32")  # (T,)
        return weights, weights

    def get_config(self):
        return {**super().get_config(), "rcond": self.rcond}
