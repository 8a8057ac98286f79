"""PCGrad: project each task's gradient off the gradients it conflicts with."""

import keras
from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting import portable_random, solvers
from keras_mtl.weighting.weighting import GradientWeighting


def random_orders(seed_generator, num_tasks):
    """`(T, T)` int32: row i is a random permutation of the tasks."""
    noise = portable_random.uniform(seed_generator, (num_tasks, num_tasks))  # (T, T)
    return ops.cast(ops.argsort(noise, axis=-1), "int32")


def projection_weights(gram, present, orders):
    """PCGrad's projections on a Gram matrix: `(T,)` weights of the rows.

    Args:
        gram: `(T, T)` Gram matrix of the task gradients `g_t`.
        present: `(T,)` 1 for the tasks in the batch, 0 for the others.
        orders: `(T, T)` int32; row i is the order in which task i is
            projected against the others (`random_orders`).

    Returns:
        `(T,)` weights `w` with `sum_t g_t'` (the projected gradients)
        `== sum_j w_j g_j`.
    """
    num_tasks = gram.shape[0]
    sq_norms = ops.diagonal(gram)  # (T,)
    rows = ops.arange(num_tasks, dtype="int32")
    coefficients = ops.eye(num_tasks)  # (T, T): g_i' = sum_k C[i, k] g_k
    for step in range(num_tasks):
        j = orders[:, step]  # (T,) the task each row is projected against
        dots = ops.take_along_axis(ops.matmul(coefficients, gram), j[:, None], axis=1)[:, 0]
        norm_j = ops.take(sq_norms, j)
        conflict = (dots < 0) & (j != rows) & (ops.take(present, j) > 0) & (norm_j > 0)
        factor = ops.where(conflict, -dots / ops.where(norm_j > 0, norm_j, 1.0), 0.0)  # (T,)
        coefficients = coefficients + factor[:, None] * ops.one_hot(j, num_tasks)
    coefficients = coefficients * present[:, None]  # absent rows contribute nothing
    return ops.sum(coefficients, axis=0) * present  # (T,)


@keras_serializable
class PCGrad(GradientWeighting):
    """Projecting conflicting gradients (Yu et al., "Gradient Surgery for
    Multi-Task Learning", NeurIPS 2020).

    For each task i, in a random order over the other tasks j: if the
    (already projected) `g_i'` conflicts with the original `g_j`
    (`g_i' . g_j < 0`), it is projected onto the normal plane of `g_j`,

        g_i' <- g_i' - (g_i' . g_j) / ||g_j||^2  g_j.

    The direction is the sum of the projected gradients. Every `g_i'` stays
    a combination of the original rows, so the whole procedure runs on the
    `T x T` Gram matrix; the direction is `sum_j w_j g_j`, and the logged
    weights are these `w_j` (1 plus the projection coefficients taken off
    the other tasks' gradients along `g_j`; all 1 without conflicts).

    Defined on parameter gradients: `rep_grad=True` raises (as in LibMTL).

    Args:
        seed: seed of the random projection orders (`None`: unseeded).
        rep_grad: must be `False`.

    Example:

    >>> weighting = PCGrad(seed=0)  # (0.5, 1.5)
    >>> np.round(weighting.aggregate(np.array([[1.0, 0.0], [-1.0, 1.0]], "float32")), 4)
    array([0.5, 1.5], dtype=float32)
    """

    supports_rep_grad = False
    gramian_weights = True

    def __init__(self, seed=None, rep_grad=False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def compute_gramian_weights(self, gram, losses, present):
        orders = random_orders(self.seed_generator, gram.shape[0])  # (T, T)
        weights = projection_weights(gram, present, orders)  # (T,)
        return weights, weights

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
