"""Calibrated gradient balancing: equal gradient norms at the shared features, set at the start."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting.weighting import GradientWeighting


@keras_serializable
class CalibratedGradientBalancing(GradientWeighting):
    """Weights each task by the inverse of its gradient norm at the shared
    features, measured over the first steps of training and then held.

    Why: how hard a task pulls on the shared trunk is the size of its
    gradient there, not the size of its loss. On Penn-Fudan (`small_resnet`,
    96 px) the person-mask task's gradient at the shared features is 6-9x
    smaller than the pedestrian-detection task's at step 0, 100 and 250 (its
    per-pixel cross-entropy is averaged over every pixel), so with equal
    weights the trunk learns boxes and the masks lose most; hand-set weights
    `person=8` were what closed the gap. Loss-ratio methods (uncertainty,
    log losses, FAMO, DB-MTL's log half) instead weigh by `1 / L_t`, which
    grows without bound for a task whose training loss goes to zero (an
    image-level label on a small data set), so that task takes the trunk
    over.

    The rule: for the first `calibration_steps` steps in which task t has
    labels (and a non-zero gradient), keep the running mean `n_t` of the
    norm of its gradient `g_t` (at the shared features with `rep_grad=True`,
    the default; else at the shared parameters). Every step then combines

        w_t = mean_s(n_s) / n_t,       direction = sum_t w_t g_t

    over the tasks present in the batch (the mean over those tasks too), so
    each task enters the shared update with the same average gradient norm
    it had at the start, and a task whose gradient later shrinks (it is
    learnt) fades instead of being amplified. After the calibration the
    weights are fixed: this is static weighting with weights read off the
    gradients instead of set by hand. The heads get their own task's
    unweighted gradient.

    With `calibration_steps=None` the window never closes: `n_t` is the
    mean norm of every labelled step so far (each task is weighted by the
    inverse of its average gradient norm to date). A task whose gradient shrinks
    still fades (its mean is held up by its past), but one whose gradient
    grows as it trains no longer takes a growing share of the trunk's
    updates (on Penn-Fudan at 96 px, detection's grows about 1.5x at the
    features between steps 100 and 1600 while the masks' falls by a third,
    so with the weights held the masks' share of the trunk's update halves;
    `benchmarks/task_gradient_scales.py --per-level`).

    This is the target of GradNorm (Chen, Badrinarayanan, Lee and
    Rabinovich, "GradNorm: Gradient Normalization for Adaptive Loss
    Balancing in Deep Multitask Networks", ICML 2018): equal gradient norms
    at the last shared layer, there with asymmetry `alpha = 0` and learnt by
    gradient descent on the weights; LibMTL's `GradNorm` (rep_grad on the
    shared representation) measures the norms where this class does. Here
    the weights are the closed-form solution from measured norms, averaged
    over a calibration window and then frozen.

    Logged weights: `w_t` (0 for a task absent from the batch).

    Args:
        calibration_steps: labelled steps per task over which its gradient
            norm is averaged; the weights are fixed afterwards. `None`:
            average over the whole run (the weights keep moving).
        rep_grad: measure and combine the gradients at the shared features
            (one backward pass through the trunk; default) or, `False`, at
            the shared parameters (T passes).

    Example:

    >>> weighting = CalibratedGradientBalancing(calibration_steps=1)
    >>> weighting.set_tasks([Classification("a", 2), Classification("b", 2)])
    >>> np.round(weighting.aggregate(np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]], "float32")), 4)
    array([1.8, 2.4, 3. ], dtype=float32)
    """

    def __init__(self, calibration_steps=100, rep_grad=True, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        if calibration_steps is not None and int(calibration_steps) < 1:
            raise ValueError(f"calibration_steps must be >= 1 or None, got {calibration_steps}.")
        self.calibration_steps = None if calibration_steps is None else int(calibration_steps)

    def build_state(self, num_tasks):
        self.norm_sum = self.add_weight(shape=(num_tasks,), initializer="zeros",
                                        trainable=False, name="norm_sum")
        self.norm_count = self.add_weight(shape=(num_tasks,), initializer="zeros",
                                          trainable=False, name="norm_count")

    gramian_weights = True

    def compute_gramian_weights(self, gram, losses, present):
        norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))  # (T,)
        count = ops.convert_to_tensor(self.norm_count)  # (T,)
        measured = present * ops.cast(norms > 0.0, "float32")  # (T,) a zero row has no size
        calibrating = measured
        if self.calibration_steps is not None:
            calibrating = calibrating * ops.cast(count < float(self.calibration_steps), "float32")
        norm_sum = self.norm_sum + calibrating * norms  # (T,)
        count = count + calibrating
        self.norm_sum.assign(norm_sum)
        self.norm_count.assign(count)
        # A task not measured yet (first labelled step had a zero gradient) uses today's norm.
        mean_norm = ops.where(count > 0.0, norm_sum / ops.maximum(count, 1.0), norms)  # (T,)
        usable = present * ops.cast(mean_norm > 0.0, "float32")  # (T,)
        target = ops.sum(usable * mean_norm) / ops.maximum(ops.sum(usable), 1.0)  # ()
        weights = usable * target / ops.where(mean_norm > 0.0, mean_norm, 1.0)  # (T,)
        return weights, weights

    def get_config(self):
        return {**super().get_config(), "calibration_steps": self.calibration_steps}

