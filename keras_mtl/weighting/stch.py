"""Smooth Tchebycheff scalarisation: a smooth max of the normalised log losses."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting.weighting import LossWeighting

_VERY_NEGATIVE = -1e30  # stands for -inf in a masked max


@keras_serializable
class SmoothTchebycheff(LossWeighting):
    """Minimises a smooth maximum of the task losses (Lin et al., "Smooth
    Tchebycheff Scalarization for Multi-Objective Optimization", ICML 2024),
    in the paper's multi-task setting (official code `Xi-L/STCH`, LibMTL).

    Training runs in three phases, counted in epochs of `steps_per_epoch`
    training steps (the layer counts its own training calls; no callback):

    1. epochs `0 .. warmup_epochs - 1`: minimise `sum_t log(L_t + epsilon)`
       (log losses, as in the reference code's warm-up);
    2. epoch `warmup_epochs`: the same objective, while averaging each
       task's batch losses: that average is the nadir point `n_t`;
    3. later epochs: with `l_t = log(L_t / n_t + epsilon)` (losses
       normalised by the nadir point, in log space, so the ideal point is
       `z = 0`) minimise

           T * mu * log(sum_t exp(l_t / mu))

       which tends to `T * max_t l_t` (Tchebycheff) as `mu -> 0` and is
       smooth for `mu > 0`; the factor T is the reference code's. The value
       is the exact smoothed max; the reference code drops the constant
       `max_t l_t` from the value, which does not change the gradient.

    So STCH proper starts after `warmup_epochs + 1` epochs, exactly as the
    reference's `STCH_warmup_epoch` (default 4). With `steps_per_epoch=None`
    every training step counts as an epoch (warm-up then lasts
    `warmup_epochs + 1` steps and the nadir is one batch's losses): pass
    the number of batches per epoch for the paper's behaviour.

    The logged weight of task t is `d total / d L_t`: `1 / (L_t + epsilon)`
    in the warm-up, `T * softmax(l / mu)_t / (L_t + epsilon n_t)` after it.

    Missing labels: a task without labels in a batch is left out of the
    objective (zero loss and gradient, out of the smooth max), out of the
    nadir average, and keeps its last logged weight. A task never labelled
    during the nadir epoch gets `n_t = 1` (no normalisation). Evaluation
    (`training=False`) uses the current phase and nadir and updates nothing.

    Args:
        mu: smoothing parameter (> 0); the reference default is 1.0.
        warmup_epochs: epochs of log-loss warm-up before the nadir epoch.
        steps_per_epoch: training steps per epoch, or `None` (see above).
        epsilon: added inside the logs (a zero loss stays finite).

    Example:

    >>> weighting = SmoothTchebycheff(warmup_epochs=0)  # nadir from step 0
    >>> weighting.set_tasks([Classification("a", 2), Classification("b", 2)])
    >>> _ = weighting(np.array([2.0, 4.0]), np.ones(2), training=True)  # n = (2, 4)
    >>> total = weighting(np.array([2.0, 4.0]), np.ones(2), training=True)
    >>> round(float(total), 4)  # 2 * log(exp(0) + exp(0))
    1.3863
    """

    def __init__(self, mu=1.0, warmup_epochs=4, steps_per_epoch=None, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        if not mu > 0:
            raise ValueError(f"`mu` must be > 0, got {mu}.")
        if int(warmup_epochs) < 0:
            raise ValueError(f"`warmup_epochs` must be >= 0, got {warmup_epochs}.")
        if steps_per_epoch is not None and int(steps_per_epoch) < 1:
            raise ValueError(f"`steps_per_epoch` must be >= 1 or None, got {steps_per_epoch}.")
        self.mu = float(mu)
        self.warmup_epochs = int(warmup_epochs)
        self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
        self.epsilon = float(epsilon)

    def build_state(self, num_tasks):
        self.step = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                    name="step", dtype="int32")  # training calls so far
        self.nadir_sum = self.add_weight(shape=(num_tasks,), initializer="zeros",
                                         trainable=False, name="nadir_sum")  # (T,)
        self.nadir_count = self.add_weight(shape=(num_tasks,), initializer="zeros",
                                           trainable=False, name="nadir_count")  # (T,)

    def nadir(self):
        """`(T,)` the nadir point: average loss of the nadir epoch (1 if unseen)."""
        count = ops.convert_to_tensor(self.nadir_count)
        average = self.nadir_sum / ops.maximum(count, 1.0)
        return ops.where(count > 0.0, ops.maximum(average, self.epsilon), 1.0)

    def call(self, losses, present, training=False):
        losses = ops.cast(losses, "float32")  # (T,)
        present = ops.cast(present, "float32")  # (T,)
        labelled = present > 0.0  # (T,)
        safe = ops.where(labelled, ops.maximum(losses, 0.0), 1.0)  # (T,) no log(0) on absent tasks
        num_tasks = ops.cast(ops.shape(losses)[0], "float32")
        epoch = ops.floor_divide(ops.convert_to_tensor(self.step), self.steps_per_epoch or 1)
        in_warmup = epoch <= self.warmup_epochs  # () phases 1 and 2

        # Phases 1-2: sum of log losses.
        warmup_total = ops.sum(present * ops.log(safe + self.epsilon))
        warmup_weights = 1.0 / (safe + self.epsilon)  # (T,)

        # Phase 3: T * mu * logsumexp(l / mu) over the labelled tasks.
        nadir = self.nadir()  # (T,)
        scaled = ops.log(safe / nadir + self.epsilon) / self.mu  # (T,) l_t / mu
        peak = ops.stop_gradient(ops.max(ops.where(labelled, scaled, _VERY_NEGATIVE)))
        exps = present * ops.exp(ops.where(labelled, scaled - peak, 0.0))  # (T,) <= 1
        sum_exps = ops.sum(exps)  # () >= 1 when a task is labelled
        stch_total = num_tasks * self.mu * (peak + ops.log(ops.maximum(sum_exps, 1e-30)))
        stch_total = ops.where(sum_exps > 0.0, stch_total, 0.0)
        softmax = exps / ops.maximum(sum_exps, 1e-30)  # (T,)
        stch_weights = num_tasks * softmax / (safe + self.epsilon * nadir)  # (T,)

        total = ops.where(in_warmup, warmup_total, stch_total)
        if training:
            weights = ops.stop_gradient(ops.where(in_warmup, warmup_weights, stch_weights))
            self.weights_variable.assign(ops.where(labelled, weights, self.weights_variable))
            averaging = ops.cast(ops.equal(epoch, self.warmup_epochs), "float32")  # phase 2
            self.nadir_sum.assign(
                self.nadir_sum + averaging * ops.where(labelled, ops.stop_gradient(safe), 0.0))
            self.nadir_count.assign(self.nadir_count + averaging * present)
            self.step.assign(self.step + 1)
        return total

    def get_config(self):
        return {
            **super().get_config(),
            "mu": self.mu,
            "warmup_epochs": self.warmup_epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "epsilon": self.epsilon,
        }
