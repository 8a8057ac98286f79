"""GradVac: set the cosine similarity of task gradients to an adaptive target."""

import keras
from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting import solvers
from keras_mtl.weighting.pcgrad import random_orders
from keras_mtl.weighting.weighting import GradientWeighting


@keras_serializable
class GradVac(GradientWeighting):
    """Gradient Vaccine (Wang et al., "Gradient Vaccine: Investigating and
    Improving Multi-task Optimization in Massively Multilingual Models",
    ICLR 2021).

    GradVac generalises PCGrad: each pair of tasks (i, j) has a target
    cosine similarity `phi_hat_ij`, an exponential moving average of the
    similarities seen (`phi_hat <- (1 - beta) phi_hat + beta phi`, starting
    at 0). For each task i, in a random order over the other tasks j, when
    `phi_ij = cos(g_i', g_j)` is below its target, `g_j` is added to `g_i'`
    with the coefficient that raises the cosine exactly to the target:

        g_i' <- g_i' + ||g_i'|| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2))
                       / (||g_j|| sqrt(1 - phi_hat^2))  g_j.

    With all targets 0 this is PCGrad. The direction is the sum of the
    `g_i'`. As with PCGrad, every `g_i'` is a combination of the original
    rows, so the procedure runs on the Gram matrix; logged weights are the
    coefficients `w_j` of `direction = sum_j w_j g_j`.

    The similarity is measured on the whole flattened gradient (LibMTL's
    "whole model" granularity; the paper also uses per-layer targets). The
    moving average is updated every step, for each pair of present tasks,
    with the similarity before the update (the paper's algorithm; LibMTL
    only updates it under conflict). Defined on parameter gradients:
    `rep_grad=True` raises (as in LibMTL).

    Args:
        beta: moving-average rate of the targets (the paper's 1e-2).
        seed: seed of the random orders (`None`: unseeded).
        rep_grad: must be `False`.

    Example:

    >>> weighting = GradVac(beta=0.01, seed=0)  # PCGrad at first
    >>> np.round(weighting.aggregate(np.array([[1.0, 0.0], [-1.0, 1.0]], "float32")), 4)
    array([0.5, 1.5], dtype=float32)
    """

    supports_rep_grad = False
    gramian_weights = True

    def __init__(self, beta=0.01, seed=None, rep_grad=False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"GradVac beta must be in [0, 1], got {beta}.")
        self.beta = float(beta)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build_state(self, num_tasks):
        self.target_similarity = self.add_weight(
            shape=(num_tasks, num_tasks), initializer="zeros", trainable=False,
            name="target_similarity",
        )

    def compute_gramian_weights(self, gram, losses, present):
        num_tasks = gram.shape[0]
        norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))  # (T,)
        targets = ops.convert_to_tensor(self.target_similarity)  # (T, T)
        orders = random_orders(self.seed_generator, num_tasks)  # (T, T)
        rows = ops.arange(num_tasks, dtype="int32")
        coefficients = ops.eye(num_tasks)  # g_i' = sum_k C[i, k] g_k
        observed = ops.zeros((num_tasks, num_tasks))  # phi_ij seen this step
        seen = ops.zeros((num_tasks, num_tasks))  # 1 where phi_ij was measured
        for step in range(num_tasks):
            j = orders[:, step]  # (T,)
            one_hot = ops.one_hot(j, num_tasks)  # (T, T)
            c_gram = ops.matmul(coefficients, gram)  # (T, T)
            dots = ops.sum(c_gram * one_hot, axis=1)  # g_i' . g_j
            norm_i = ops.sqrt(ops.maximum(ops.sum(c_gram * coefficients, axis=1), 0.0))  # ||g_i'||
            norm_j = ops.take(norms, j)
            valid = (j != rows) & (present > 0) & (ops.take(present, j) > 0) & (norm_i > 0) & (norm_j > 0)
            phi = ops.where(valid, dots / ops.where(valid, norm_i * norm_j, 1.0), 0.0)
            phi = ops.clip(phi, -1.0, 1.0)
            target = ops.clip(ops.sum(targets * one_hot, axis=1), -1.0 + 1e-6, 1.0 - 1e-6)
            factor = norm_i * (target * ops.sqrt(1.0 - phi * phi) - phi * ops.sqrt(1.0 - target * target))
            factor = factor / ops.where(valid, norm_j * ops.sqrt(1.0 - target * target), 1.0)
            factor = ops.where(valid & (phi < target), factor, 0.0)  # (T,)
            coefficients = coefficients + factor[:, None] * one_hot
            observed = observed + ops.where(valid[:, None], phi[:, None] * one_hot, 0.0)
            seen = seen + ops.cast(valid, "float32")[:, None] * one_hot
        self.target_similarity.assign(targets + self.beta * seen * (observed - targets))  # EMA
        coefficients = coefficients * present[:, None]
        weights = ops.sum(coefficients, axis=0) * present
        return weights, weights

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "seed": self.seed}
