"""Krum: the task gradient(s) closest to their nearest neighbours."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting.weighting import GradientWeighting

_FAR = 1e30  # the distance to an absent task (never a neighbour)


def rank_ascending(scores):
    """`(T,)` int: each entry's position in ascending order, ties broken by index."""
    num = scores.shape[0]
    index = ops.arange(num)
    before = (scores[None, :] < scores[:, None]) | (
        (scores[None, :] == scores[:, None]) & (index[None, :] < index[:, None]))  # (T, T)
    return ops.sum(ops.cast(before, "int32"), axis=1)


@keras_serializable
class Krum(GradientWeighting):
    """(Multi-)Krum (Blanchard, El Mhamdi, Guerraoui and Stainer, "Machine
    Learning with Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS
    2017; reference behaviour: TorchJD's `torchjd.aggregation.Krum`).

    Each present task gradient is scored by the sum of its distances to its
    `n - f - 2` nearest other task gradients (`n` present tasks, `f =
    n_byzantine` that may be outliers); the `n_selected` gradients of least
    score are averaged. The update follows the bulk of the tasks and
    ignores gradients far from all others (a task whose loss has a much
    larger scale, or a noisy one).

    TorchJD requires `T >= f + 3`; here, so that a batch with few labelled
    tasks still trains, the neighbour count is clipped to `[1, n - 1]` and
    `n_selected` to `n` (one present task: its own gradient; two: equal
    scores, the first is kept). Ties are broken by task order. Distances
    come from the `T x T` Gram matrix. Logged weights: `1 / n_selected` on
    the selected tasks, 0 elsewhere. Defined on any set of task gradients,
    so `rep_grad=True` is supported.

    Args:
        n_byzantine: `f >= 0`, the number of task gradients that may be
            outliers.
        n_selected: number of gradients averaged (1: Krum, more:
            Multi-Krum).
        rep_grad: see `GradientWeighting`.

    Example:

    >>> weighting = Krum()  # 4 - 0 - 2 = 2 neighbours: scores 0.4, 0.7, 0.5 and ~25
    >>> grads = np.array([[1.0, 0.0], [1.3, 0.0], [0.9, 0.0], [-9.0, 9.0]], "float32")
    >>> np.round(weighting.aggregate(grads), 4)
    array([1., 0.], dtype=float32)
    """

    def __init__(self, n_byzantine=0, n_selected=1, rep_grad=False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        if int(n_byzantine) < 0:
            raise ValueError(f"Krum n_byzantine must be >= 0, got {n_byzantine}.")
        if int(n_selected) < 1:
            raise ValueError(f"Krum n_selected must be >= 1, got {n_selected}.")
        self.n_byzantine = int(n_byzantine)
        self.n_selected = int(n_selected)

    gramian_weights = True  # the coefficients depend on the gradients through G alone

    def compute_gramian_weights(self, gram, losses, present):
        num_tasks = gram.shape[0]
        squared = ops.diagonal(gram)  # (T,)
        distances = ops.sqrt(ops.maximum(squared[:, None] + squared[None, :] - 2.0 * gram, 0.0))
        pair = (present[:, None] * present[None, :] > 0.0) & (ops.eye(num_tasks) == 0.0)  # (T, T)
        distances = ops.where(pair, distances, _FAR)  # (T, T) self and absent pairs are far
        count = ops.sum(present)  # () n
        neighbours = ops.clip(count - self.n_byzantine - 2.0, 1.0, ops.maximum(count - 1.0, 1.0))
        nearest = ops.sort(distances, axis=1)  # (T, T) ascending per row
        within = ops.cast(ops.arange(num_tasks), "float32")[None, :] < neighbours  # (1, T)
        scores = ops.sum(ops.where(within & (nearest < _FAR), nearest, 0.0), axis=1)  # (T,)
        scores = ops.where(present > 0.0, scores, _FAR)  # absent tasks are never selected
        selected = ops.minimum(float(self.n_selected), ops.maximum(count, 1.0))  # ()
        chosen = ops.cast(ops.cast(rank_ascending(scores), "float32") < selected, "float32")
        weights = chosen * present / selected  # (T,)
        return weights, weights

    def get_config(self):
        return {**super().get_config(), "n_byzantine": self.n_byzantine,
                "n_selected": self.n_selected}
