"""Log-loss weighting: minimise the sum of log losses (DB-MTL's loss-scale half)."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting.weighting import LossWeighting


@keras_serializable
class LogLossWeighting(LossWeighting):
    """Balances the loss scales with logarithms (Lin et al., "Dual-Balancing
    for Multi-Task Learning", arXiv:2308.12029, 2023): the loss-scale
    balancing half of DB-MTL.

    The scalar minimised is

        sum_t log(L_t + epsilon)

    whose gradient weighs task t's loss gradient by `1 / (L_t + epsilon)`,
    the logged weight: every task's loss counts in relative terms, so a task
    whose loss is 100x larger is not pulled 100x harder. `epsilon` is the
    paper's and LibMTL's 1e-8.

    The paper's second half, gradient-magnitude balancing, needs per-task
    gradients: the full method is `DualBalancing` (`"db_mtl"`). This class
    alone is the paper's "log loss" ablation, registered as `"log_losses"`;
    it costs nothing beyond the plain step.

    A task without labels in a batch contributes zero loss and gradient and
    keeps its last logged weight; there are no other statistics.

    Args:
        epsilon: added to each loss inside the log (a zero loss gives a
            finite result and gradient).

    Example:

    >>> weighting = LogLossWeighting()
    >>> weighting.set_tasks([Classification("a", 2), Classification("b", 2)])
    >>> round(float(weighting(np.array([1.0, np.e]), np.ones(2))), 4)  # log 1 + log e
    1.0
    """

    def __init__(self, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, losses, present, training=False):
        losses = ops.cast(losses, "float32")  # (T,)
        present = ops.cast(present, "float32")  # (T,)
        labelled = present > 0.0  # (T,)
        safe = ops.where(labelled, ops.maximum(losses, 0.0), 1.0) + self.epsilon  # (T,) > 0
        if training:
            weights = ops.stop_gradient(1.0 / safe)  # (T,) d total / d L_t
            self.weights_variable.assign(ops.where(labelled, weights, self.weights_variable))
        return ops.sum(present * ops.log(safe))

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
