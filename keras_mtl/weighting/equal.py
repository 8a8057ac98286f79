"""Equal weighting: the plain sum of the task losses."""

from keras import ops

from keras_mtl.weighting.weighting import LossWeighting
from keras_mtl.tasks.task import keras_serializable


@keras_serializable
class EqualWeighting(LossWeighting):
    """Sums the task losses with weight 1 each: the usual baseline.

    Example:

    >>> weighting = EqualWeighting()
    >>> weighting.set_tasks([Classification("a", 2), Classification("b", 2)])
    >>> float(weighting(np.array([1.0, 2.0]), np.array([1.0, 1.0])))
    3.0
    """

    def compute_weights(self, losses, present, training):
        return ops.ones_like(losses)
