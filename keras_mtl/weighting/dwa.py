"""Dynamic Weight Average: weights from the rate at which each loss falls."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting.weighting import LossWeighting


@keras_serializable
class DynamicWeightAverage(LossWeighting):
    """Weighs each task by how slowly its loss falls (Liu, Johns and Davison,
    "End-to-End Multi-Task Learning with Attention", CVPR 2019, eq. 7).

    With `Lbar_t(e)` the average training loss of task t over epoch e,

        r_t = Lbar_t(e-1) / Lbar_t(e-2)
        w_t = T * softmax(r / temperature)_t      (the weights sum to T)

    and the scalar minimised during epoch e is `sum_t w_t * L_t`. A task
    whose loss fell less (larger `r_t`) gets a larger weight. During the
    first two epochs (no two averages yet) every weight is 1, as in the
    paper and the reference code.

    Epochs are counted by the layer itself, without a callback: it counts
    its training calls, and every `steps_per_epoch` calls closes an "epoch"
    (running sums of each task's batch losses and label counts become that
    epoch's average, then restart). Pass the number of batches per epoch for
    the paper's behaviour. With `steps_per_epoch=None` every training step
    is its own epoch: the ratio compares the last two batch losses (noisier;
    a per-step variant, not the paper's setting).

    Missing labels: each task's epoch average only counts the batches where
    it is labelled. A task with no labels in a batch contributes zero loss
    and gradient and its sums are unchanged; a task with no labels during a
    whole epoch keeps its two previous averages (its ratio then compares the
    last two epochs in which it had labels); a task with fewer than two
    averages gets the neutral ratio 1. Weights are computed over all tasks
    whether present or not, so the logged weights do not depend on the batch.
    Evaluation (`training=False`) uses the current weights without updating
    the averages.

    Args:
        temperature: softmax temperature `T` of the paper (2.0 there).
        steps_per_epoch: training steps per epoch (see above), or `None`.
        epsilon: floor of the denominator average, so a zero loss never
            divides by zero.

    Example:

    >>> weighting = DynamicWeightAverage(steps_per_epoch=1)
    >>> weighting.set_tasks([Classification("a", 2), Classification("b", 2)])
    >>> for loss in ([1.0, 1.0], [0.5, 1.0]):   # epochs 0 and 1: weights 1
    ...     _ = weighting(np.array(loss), np.ones(2), training=True)
    >>> np.round(ops.convert_to_numpy(weighting.current_weights()), 3)
    array([1., 1.], dtype=float32)
    >>> _ = weighting(np.array([0.4, 0.9]), np.ones(2), training=True)  # r = (0.5, 1)
    >>> np.round(ops.convert_to_numpy(weighting.current_weights()), 3)
    array([0.876, 1.124], dtype=float32)
    """

    def __init__(self, temperature=2.0, steps_per_epoch=None, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        if steps_per_epoch is not None and int(steps_per_epoch) < 1:
            raise ValueError(f"`steps_per_epoch` must be >= 1 or None, got {steps_per_epoch}.")
        self.temperature = float(temperature)
        self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
        self.epsilon = float(epsilon)

    def build_state(self, num_tasks):
        def state(name, shape=(num_tasks,), dtype="float32"):
            return self.add_weight(shape=shape, initializer="zeros", trainable=False,
                                   name=name, dtype=dtype)

        self.step = state("step", shape=(), dtype="int32")  # training calls so far
        self.loss_sum = state("loss_sum")                  # (T,) this epoch's sum of batch losses
        self.loss_count = state("loss_count")              # (T,) this epoch's labelled batches
        self.last_average = state("last_average")          # (T,) Lbar(e-1)
        self.previous_average = state("previous_average")  # (T,) Lbar(e-2)
        self.num_averages = state("num_averages")          # (T,) epoch averages recorded

    def compute_weights(self, losses, present, training):
        last = ops.convert_to_tensor(self.last_average)
        previous = ops.maximum(ops.convert_to_tensor(self.previous_average), self.epsilon)
        ratio = ops.where(self.num_averages >= 2.0, last / previous, ops.ones_like(last))  # (T,)
        num_tasks = ops.cast(ops.shape(ratio)[0], "float32")
        return num_tasks * ops.softmax(ratio / self.temperature)  # (T,)

    def call(self, losses, present, training=False):
        losses = ops.cast(losses, "float32")  # (T,)
        present = ops.cast(present, "float32")  # (T,)
        weights = ops.stop_gradient(self.compute_weights(losses, present, training))  # (T,)
        if training:
            self.weights_variable.assign(weights)
            self._update_averages(ops.stop_gradient(losses), present)
        return ops.sum(weights * present * losses)

    def _update_averages(self, losses, present):
        labelled = present > 0.0  # (T,)
        loss_sum = self.loss_sum + ops.where(labelled, losses, 0.0)
        loss_count = self.loss_count + present
        step = self.step + 1
        period = self.steps_per_epoch or 1
        epoch_end = ops.equal(ops.mod(step, period), 0)  # () closes the epoch
        roll = ops.logical_and(epoch_end, loss_count > 0.0)  # (T,) tasks with a new average
        average = loss_sum / ops.maximum(loss_count, 1.0)
        self.previous_average.assign(ops.where(roll, self.last_average, self.previous_average))
        self.last_average.assign(ops.where(roll, average, self.last_average))
        self.num_averages.assign(self.num_averages + ops.cast(roll, "float32"))
        self.loss_sum.assign(ops.where(epoch_end, ops.zeros_like(loss_sum), loss_sum))
        self.loss_count.assign(ops.where(epoch_end, ops.zeros_like(loss_count), loss_count))
        self.step.assign(step)

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "steps_per_epoch": self.steps_per_epoch,
            "epsilon": self.epsilon,
        }
