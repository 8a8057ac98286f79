"""Trimmed mean: per coordinate, the mean of the task gradients without the extremes."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting.weighting import GradientWeighting

_LAST = 3.0e38  # sorts an absent task's entry after every real value


@keras_serializable
class TrimmedMean(GradientWeighting):
    """Coordinate-wise trimmed mean (Yin, Chen, Kannan and Bartlett,
    "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
    Rates", ICML 2018; reference behaviour: TorchJD's
    `torchjd.aggregation.TrimmedMean`).

    For every coordinate of the shared gradient, the `k = trim_number`
    largest and `k` smallest of the task gradients' entries are dropped and
    the rest averaged. A task whose gradient is extreme in some coordinates
    (a much larger loss scale, an outlier batch) does not set the update
    there. With three tasks and `k = 1` it is the coordinate-wise median.

    TorchJD requires `T >= 2k + 1`; here, so that a batch with few labelled
    tasks still trains, `k` is clipped to `(n - 1) // 2` for the `n` tasks
    present (two tasks: their mean; one: its own gradient). Absent tasks'
    entries are left out. Logged weights: the share of the average that
    each task supplies, `(coordinates where g_t is kept) / (D (n - 2k))`,
    which sums to 1 over the present tasks. Defined on any set of task
    gradients, so `rep_grad=True` is supported.

    Args:
        trim_number: `k >= 0`, the entries dropped at each end of every
            coordinate.
        rep_grad: see `GradientWeighting`.

    Example:

    >>> weighting = TrimmedMean(trim_number=1)  # three tasks: the coordinate-wise median
    >>> np.round(weighting.aggregate(np.array([[1.0, 9.0], [2.0, 0.0], [7.0, 1.0]], "float32")), 4)
    array([2., 1.], dtype=float32)
    """

    def __init__(self, trim_number=1, rep_grad=False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        if int(trim_number) < 0:
            raise ValueError(f"TrimmedMean trim_number must be >= 0, got {trim_number}.")
        self.trim_number = int(trim_number)

    def compute_direction(self, grads, losses, present):
        count = ops.sum(present)  # () n
        trim = ops.minimum(float(self.trim_number), ops.floor(ops.maximum(count - 1.0, 0.0) / 2.0))
        kept_count = ops.maximum(count - 2.0 * trim, 1.0)  # () n - 2k
        labelled = present[:, None] > 0.0  # (T, 1)
        keys = ops.where(labelled, grads, _LAST)  # (T, D) absent entries sort last
        ranks = ops.cast(ops.argsort(ops.argsort(keys, axis=0), axis=0), "float32")  # (T, D)
        kept = labelled & (ranks >= trim) & (ranks < count - trim)  # (T, D)
        direction = ops.sum(ops.where(kept, grads, 0.0), axis=0) / kept_count  # (D,)
        dim = ops.cast(ops.shape(grads)[1], "float32")  # () D (dynamic with rep_grad)
        weights = ops.sum(ops.cast(kept, "float32"), axis=1) / (kept_count * ops.maximum(dim, 1.0))
        return direction, weights * present

    def get_config(self):
        return {**super().get_config(), "trim_number": self.trim_number}
