"""Aligned-MTL: align the task gradients into an orthogonal, equal-norm system."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting import solvers
from keras_mtl.weighting.weighting import GradientWeighting

SCALE_MODES = ("min", "median", "rmse")


def alignment_matrix(gram, present, scale_mode="min"):
    """The `(T, T)` matrix `B` with `B J` the aligned gradients.

    With `G = J J^T = V diag(l) V^T` (eigenvalues below a rank tolerance
    dropped), `B = sigma V diag(l)^-1/2 V^T`: the rows of `B J` are
    orthogonal with equal norms `sigma` (`(B J)(B J)^T = sigma^2 I` on the
    span), `sigma^2` the smallest kept eigenvalue (`"min"`), their median
    (`"median"`) or mean (`"rmse"`).
    """
    num_tasks = gram.shape[-1]
    gram = solvers.masked_gram(gram, present)
    eigenvalues, vectors = ops.linalg.eigh(gram)  # (T,), (T, T) columns
    tolerance = ops.max(eigenvalues) * num_tasks * 1.2e-7  # float32 epsilon
    kept = eigenvalues > ops.maximum(tolerance, 1e-30)
    big = ops.max(eigenvalues) + 1.0
    if scale_mode == "min":
        sigma_sq = ops.min(ops.where(kept, eigenvalues, big))
    elif scale_mode == "rmse":
        sigma_sq = ops.sum(ops.where(kept, eigenvalues, 0.0)) / ops.maximum(
            ops.sum(ops.cast(kept, "float32")), 1.0)
    else:  # median of the kept eigenvalues (torch's lower median)
        ordered = ops.sort(ops.where(kept, eigenvalues, big))  # kept values first
        count = ops.sum(ops.cast(kept, "int32"))
        sigma_sq = ops.take(ordered, ops.maximum((count - 1) // 2, 0))
    inverse_sqrt = ops.where(kept, 1.0 / ops.sqrt(ops.where(kept, eigenvalues, 1.0)), 0.0)
    sigma = ops.sqrt(ops.where(ops.any(kept), sigma_sq, 0.0))
    return sigma * ops.matmul(vectors * inverse_sqrt[None, :], ops.transpose(vectors))


@keras_serializable
class AlignedMTL(GradientWeighting):
    """Aligned-MTL (Senushkin et al., "Independent Component Alignment for
    Multi-Task Learning", CVPR 2023).

    Replaces the task gradients `J` (rows `g_t`) by the closest system of
    orthogonal gradients of equal norm, removing both conflicting
    directions and dominating magnitudes (the condition number of the
    aligned system is 1): with the eigendecomposition of the Gram matrix
    `G = V L V^T`, the aligned gradients are `B J`, `B = sigma V L^-1/2 V^T`,
    and the direction is their sum, `d = J^T B^T 1 = sum_t w_t g_t` with
    `w = B 1` (the reference and LibMTL use unit task preferences).
    `sigma^2` is the smallest non-zero eigenvalue (`scale_mode="min"`, the
    default), or their median or mean (`"median"`, `"rmse"`), as in the
    reference's Procrustes solver. Eigenvalues below a rank tolerance are
    dropped, so linearly dependent or absent tasks are handled.

    Logged weights: `w`. `rep_grad=True` is the paper's Aligned-MTL-UB.

    Args:
        scale_mode: `"min"`, `"median"` or `"rmse"`.
        rep_grad: see `GradientWeighting`.

    Example:

    >>> weighting = AlignedMTL()  # w = (1, 0.5): (1, 1)
    >>> np.round(weighting.aggregate(np.array([[1.0, 0.0], [0.0, 2.0]], "float32")), 4)
    array([1., 1.], dtype=float32)
    """

    def __init__(self, scale_mode="min", rep_grad=False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        if scale_mode not in SCALE_MODES:
            raise ValueError(f"AlignedMTL scale_mode must be one of {SCALE_MODES}, got {scale_mode!r}.")
        self.scale_mode = scale_mode

    gramian_weights = True

    def compute_gramian_weights(self, gram, losses, present):
        matrix = alignment_matrix(gram, present, self.scale_mode)  # (T, T)
        weights = ops.sum(matrix, axis=0) * present  # B symmetric: B^T 1 = B 1
        return weights, weights

    def get_config(self):
        return {**super().get_config(), "scale_mode": self.scale_mode}
