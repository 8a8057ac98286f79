"""Geometric loss strategy: minimise the geometric mean of the task losses."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting.weighting import LossWeighting


@keras_serializable
class GeometricLossStrategy(LossWeighting):
    """Minimises the geometric mean of the task losses (Chennupati, Sistu,
    Yogamani and Rawashdeh, "MultiNet++: Multi-Stream Feature Aggregation and
    Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops 2019).

    The scalar minimised is

        G = (prod_t L_t) ^ (1 / n)

    over the `n` tasks labelled in the batch (all T when every task is),
    computed as `exp(mean_t log max(L_t, epsilon))` so it neither overflows
    nor takes the log of 0. Its gradient weighs task t's loss gradient by
    `dG/dL_t = G / (n L_t)`: tasks with small losses are pushed harder, so
    no task's loss scale dominates. That factor is the logged weight. A task
    without labels in a batch is left out of the product (zero loss and
    gradient) and keeps its last logged weight; with no labelled task at
    all the result is 0. GLS keeps no statistics.

    Args:
        epsilon: floor of each loss inside the log (a zero loss gives a
            finite result and gradient).

    Example:

    >>> weighting = GeometricLossStrategy()
    >>> weighting.set_tasks([Classification("a", 2), Classification("b", 2)])
    >>> float(weighting(np.array([1.0, 4.0]), np.ones(2)))  # sqrt(1 * 4)
    2.0
    """

    def __init__(self, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, losses, present, training=False):
        losses = ops.cast(losses, "float32")  # (T,)
        present = ops.cast(present, "float32")  # (T,)
        labelled = present > 0.0  # (T,)
        count = ops.sum(present)  # () tasks in the product
        safe = ops.where(labelled, ops.maximum(losses, self.epsilon), 1.0)  # (T,) no log(0)
        mean_log = ops.sum(present * ops.log(safe)) / ops.maximum(count, 1.0)
        total = ops.where(count > 0.0, ops.exp(mean_log), 0.0)  # ()
        if training:
            weights = ops.stop_gradient(total / (ops.maximum(count, 1.0) * safe))  # (T,) dG/dL
            self.weights_variable.assign(ops.where(labelled, weights, self.weights_variable))
        return total

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
