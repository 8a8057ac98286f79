"""GradDrop: keep, per gradient entry, the sign that most tasks agree on."""

import keras
import tensorflow as tf
from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting import portable_random
from keras_mtl.weighting.weighting import GradientWeighting


@keras_serializable
class GradDrop(GradientWeighting):
    """Gradient sign dropout (Chen et al., "Just Pick a Sign: Optimizing Deep
    Multitask Models with Gradient Sign Dropout", NeurIPS 2020).

    For each gradient entry, the positive sign purity

        P = 1/2 (1 + sum_t g_t / sum_t |g_t|)

    is the probability of keeping the positive contributions: with
    `U ~ uniform(0, 1)` drawn per entry, task t's entry is kept when
    `P > U and g_t > 0` or `P < U and g_t < 0`, and dropped otherwise, so
    every entry of the direction moves in one sign only. With `leak` in
    [0, 1], a fraction `leak` of every dropped gradient passes anyway. The
    direction is the sum of the masked rows.

    The paper applies GradDrop to the gradients of an activation layer, as
    LibMTL does: `rep_grad=True` is the default and applies it to the
    gradients of the shared features, per entry of the batch's features.
    `rep_grad=False` applies the same rule to the entries of the shared
    parameters' gradient. The paper's variant for batch-separated gradients
    (signs summed over the batch) is not implemented.

    The draws are the same with and without XLA (`portable_random`). Under a
    multi-replica strategy with `rep_grad=True`, the feature columns are
    gathered replica by replica, so the same draws land on other entries
    than on one device: an equally likely run, not the one-device run.

    Logged weights: the share of each task's gradient that is kept,
    `<M_t g_t, g_t> / ||g_t||^2` (1 where nothing conflicts). Not a weight
    of a linear combination: GradDrop masks entries.

    Args:
        leak: fraction of the dropped gradients kept (0: the paper's GradDrop).
        seed: seed of the per-entry uniform draws (`None`: unseeded).
        rep_grad: see above (default `True`).

    Example:

    >>> weighting = GradDrop(seed=0)
    >>> # entry 0 is 1 (prob. 1/4) or -3; entry 1 is 3
    >>> np.round(weighting.aggregate(np.array([[1.0, 2.0], [-3.0, 1.0]], "float32")), 4)
    array([1., 3.], dtype=float32)
    """

    def __init__(self, leak=0.0, seed=None, rep_grad=True, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        if not 0.0 <= leak <= 1.0:
            raise ValueError(f"GradDrop leak must be in [0, 1], got {leak}.")
        self.leak = float(leak)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def compute_direction(self, grads, losses, present):
        total = ops.sum(grads, axis=0)  # (D,)
        magnitude = ops.sum(ops.abs(grads), axis=0)  # (D,)
        purity = 0.5 * (1.0 + total / ops.where(magnitude > 0, magnitude, 1.0))  # (D,)
        draws = portable_random.uniform(self.seed_generator, tf.shape(purity))  # (D,)
        keep = ((purity > draws)[None] & (grads > 0)) | ((purity < draws)[None] & (grads < 0))
        mask = self.leak + (1.0 - self.leak) * ops.cast(keep, "float32")  # (T, D)
        masked = grads * mask
        sq_norms = ops.sum(grads * grads, axis=1)  # (T,)
        kept = ops.sum(masked * grads, axis=1) / ops.where(sq_norms > 0, sq_norms, 1.0)
        weights = ops.where(sq_norms > 0, kept, 1.0) * present
        return ops.sum(masked, axis=0), weights

    def get_config(self):
        return {**super().get_config(), "leak": self.leak, "seed": self.seed}
