"""Calibrated balancing, then PCGrad: equal gradient norms first, conflicts projected off after."""

import keras
from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting.calibrated import CalibratedGradientBalancing
from keras_mtl.weighting.pcgrad import projection_weights, random_orders


@keras_serializable
class CalibratedPCGrad(CalibratedGradientBalancing):
    """`CalibratedGradientBalancing`'s weights, then PCGrad's projections on
    the weighted gradients.

    Why: the two address different things. Calibrated balancing sets how
    hard each task pulls on the shared parameters (the size of its
    gradient); PCGrad (Yu, Kumar, Gupta, Levine, Hausman and Finn,
    "Gradient Surgery for Multi-Task Learning", NeurIPS 2020; reference code
    github.com/tianheyu927/PCGrad, and LibMTL's `PCGrad`) removes, from each
    task's gradient, the part that points against another task's. Alone,
    PCGrad sums gradients of very different sizes, so the largest still
    dominates; after the balancing every task enters the projections with
    the same calibrated size. On Penn-Fudan the person-mask gradient at the
    shared parameters conflicts with the detection gradient early on
    (cosine -0.2 at step 100, `benchmarks/results/task_gradient_scales.txt`).

    The rule, per step: `w_t` from `CalibratedGradientBalancing` (the
    inverse of task t's gradient norm averaged over its first
    `calibration_steps` labelled steps, times their mean); the rows
    `h_t = w_t g_t`; PCGrad on the `h_t` (each `h_i`, in a random order of
    the other tasks j, loses its component along `h_j` when they conflict);
    the direction is the sum of the projected rows, `sum_t c_t h_t =
    sum_t (c_t w_t) g_t`. The projections read only the Gram matrix of the
    `h_t`, `w w^T * (g g^T)`. Logged weights: `c_t w_t`.

    PCGrad is defined on parameter gradients, so `rep_grad` defaults to
    `False` (T backward passes through the trunk); at the shared features of
    the Penn-Fudan model the task gradients are nearly orthogonal (cosines
    within +-0.06) and there is little to project.

    Args:
        calibration_steps: labelled steps per task over which its gradient
            norm is averaged; the balancing weights are fixed afterwards.
        seed: seed of PCGrad's random projection orders (`None`: unseeded).
        rep_grad: `False` (default): the gradients of the shared parameters;
            `True`: of the shared features.

    Example:

    >>> weighting = CalibratedPCGrad(calibration_steps=1)
    >>> weighting.set_tasks([Classification("a", 2), Classification("b", 2)])
    >>> np.round(weighting.aggregate(np.array([[2.0, 0.0], [-1.0, 1.0]], "float32")), 4)
    array([0.8536, 2.0607], dtype=float32)
    """

    def __init__(self, calibration_steps=100, seed=None, rep_grad=False, **kwargs):
        super().__init__(calibration_steps=calibration_steps, rep_grad=rep_grad, **kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def compute_gramian_weights(self, gram, losses, present):
        balance, _ = super().compute_gramian_weights(gram, losses, present)  # (T,)
        balanced_gram = gram * balance[:, None] * balance[None, :]  # (T, T): Gram of w_t g_t
        orders = random_orders(self.seed_generator, gram.shape[0])  # (T, T)
        in_step = present * ops.cast(balance > 0.0, "float32")  # (T,)
        weights = projection_weights(balanced_gram, in_step, orders) * balance  # (T,)
        return weights, weights

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
