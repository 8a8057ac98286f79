"""FAMO: task logits that favour the tasks whose losses fall the least."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting.weighting import LossWeighting

_VERY_NEGATIVE = -1e30  # stands for -inf in a masked softmax


def _masked_softmax(logits, mask):
    """Softmax of `logits` `(T,)` over the entries where `mask` `(T,)` is True, 0 elsewhere."""
    peak = ops.max(ops.where(mask, logits, _VERY_NEGATIVE))
    exps = ops.where(mask, ops.exp(ops.where(mask, logits - peak, 0.0)), 0.0)  # (T,)
    return exps / ops.maximum(ops.sum(exps), 1e-30)


@keras_serializable
class FastAdaptiveMultitaskOptimization(LossWeighting):
    """Fast Adaptive Multitask Optimization (Liu, Feng, Stone and Liu, "FAMO:
    Fast Adaptive Multitask Optimization", NeurIPS 2023; reference code
    `Cranial-XIX/FAMO`).

    FAMO keeps task logits `w` `(T,)` (start 0) and, with `z = softmax(w)`
    and `D_t = L_t + epsilon`, minimises

        sum_t z_t log(D_t) / c,      c = sum_t z_t / D_t   (c held constant)

    so task t's loss gradient is weighed by `z_t / (c D_t)`, the logged
    weight (they sum to 1). The logits learn, with their own Adam optimiser
    (`learning_rate`, L2 `weight_decay` added to the gradient as in
    `torch.optim.Adam`, `beta_1`, `beta_2`, `adam_epsilon`), from how much
    each log loss fell after a model update:

        delta_t = log D_t(before the update) - log D_t(after the update)
        grad_w  = J_softmax(w)^T delta = z * (delta - sum_t z_t delta_t)

    A descent step on `grad_w` lowers the logits of tasks whose loss fell
    more than average and raises those that fell less.

    Timing: the reference code calls `update(new_losses)` right after the
    optimiser step, recomputing the losses on the same batch. A Keras train
    step has a single forward pass, so here the update of step k uses the
    losses stored at step k-1 (before the update of step k-1) and the losses
    of step k (after it, on the next batch): at the start of step k the
    logits take one Adam step from that delta, then step k's objective uses
    the new logits and its losses are stored. This is the reference schedule
    with the "after" losses measured on the next batch (one forward pass per
    step, noisier delta). Step 0 makes no update. The FAMO logits and Adam
    moments are non-trainable variables, updated only by this rule (the
    model's optimiser never touches them). The reference's gradient
    clipping (`max_norm`) is the model optimiser's business (`clipnorm`).
    The reference's minimum losses are 0 here.

    Missing labels: the logit update at step k only involves tasks labelled
    at step k that have a stored loss (softmax, delta and Adam step over
    those tasks; the others' logits, moments, step counts and stored losses
    are untouched, and a task's next delta is measured from its last
    labelled batch). The objective's softmax runs over the tasks labelled
    in the batch; an absent task gets zero loss and gradient and keeps its
    last logged weight. Evaluation (`training=False`) uses the current
    logits and updates nothing.

    Args:
        learning_rate: Adam learning rate of the logits (reference: 0.025).
        weight_decay: L2 coefficient `gamma` on the logits (reference
            `famo.py`: 0.01; LibMTL: 0.001).
        beta_1, beta_2, adam_epsilon: Adam constants of the logit update.
        epsilon: added to each loss inside the logs (reference: 1e-8).

    Example:

    >>> weighting = FastAdaptiveMultitaskOptimization()
    >>> weighting.set_tasks([Classification("a", 2), Classification("b", 2)])
    >>> _ = weighting(np.array([1.0, 1.0]), np.ones(2), training=True)
    >>> _ = weighting(np.array([0.5, 1.0]), np.ones(2), training=True)  # "a" fell more
    >>> logits = ops.convert_to_numpy(weighting.logits)
    >>> bool(logits[1] > logits[0])
    True
    """

    def __init__(self, learning_rate=0.025, weight_decay=0.01, beta_1=0.9, beta_2=0.999,
                 adam_epsilon=1e-8, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        self.learning_rate = float(learning_rate)
        self.weight_decay = float(weight_decay)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.adam_epsilon = float(adam_epsilon)
        self.epsilon = float(epsilon)

    def build_state(self, num_tasks):
        def state(name):
            return self.add_weight(shape=(num_tasks,), initializer="zeros", trainable=False,
                                   name=name)

        self.logits = state("logits")                # (T,) w
        self.adam_m = state("adam_m")                # (T,) first moments
        self.adam_v = state("adam_v")                # (T,) second moments
        self.adam_steps = state("adam_steps")        # (T,) Adam steps taken by each logit
        self.previous_losses = state("previous_losses")  # (T,) last labelled loss
        self.has_previous = state("has_previous")    # (T,) 1.0 once a loss is stored

    def _update_logits(self, losses, present):
        """One Adam step of the logits from the log-loss decrease; returns the new logits."""
        logits = ops.convert_to_tensor(self.logits)  # (T,)
        valid = ops.logical_and(present > 0.0, self.has_previous > 0.0)  # (T,)
        previous = ops.where(valid, self.previous_losses, 1.0)
        delta = ops.log(previous + self.epsilon) - ops.log(losses + self.epsilon)  # (T,)
        delta = ops.where(valid, delta, 0.0)
        z = _masked_softmax(logits, valid)  # (T,)
        grad = z * (delta - ops.sum(z * delta)) + self.weight_decay * logits  # (T,)
        m = self.beta_1 * self.adam_m + (1.0 - self.beta_1) * grad
        v = self.beta_2 * self.adam_v + (1.0 - self.beta_2) * ops.square(grad)
        steps = self.adam_steps + 1.0
        m_hat = m / (1.0 - ops.power(self.beta_1, steps))
        v_hat = v / (1.0 - ops.power(self.beta_2, steps))
        new_logits = logits - self.learning_rate * m_hat / (ops.sqrt(v_hat) + self.adam_epsilon)
        new_logits = ops.where(valid, new_logits, logits)
        self.adam_m.assign(ops.where(valid, m, self.adam_m))
        self.adam_v.assign(ops.where(valid, v, self.adam_v))
        self.adam_steps.assign(ops.where(valid, steps, self.adam_steps))
        self.logits.assign(new_logits)
        return new_logits

    def call(self, losses, present, training=False):
        losses = ops.cast(losses, "float32")  # (T,)
        present = ops.cast(present, "float32")  # (T,)
        labelled = present > 0.0  # (T,)
        safe = ops.where(labelled, ops.maximum(losses, 0.0), 1.0)  # (T,) no log(0) on absent tasks
        if training:
            logits = self._update_logits(ops.stop_gradient(safe), present)
        else:
            logits = ops.convert_to_tensor(self.logits)
        z = _masked_softmax(logits, labelled)  # (T,) 0 on absent tasks
        d = safe + self.epsilon  # (T,)
        c = ops.stop_gradient(ops.maximum(ops.sum(z / d), 1e-30))  # ()
        total = ops.sum(z * ops.log(d)) / c
        if training:
            weights = ops.stop_gradient(z / (c * d))  # (T,) d total / d L_t
            self.weights_variable.assign(ops.where(labelled, weights, self.weights_variable))
            self.previous_losses.assign(
                ops.where(labelled, ops.stop_gradient(safe), self.previous_losses))
            self.has_previous.assign(ops.maximum(self.has_previous, present))
        return total

    def get_config(self):
        return {
            **super().get_config(),
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "adam_epsilon": self.adam_epsilon,
            "epsilon": self.epsilon,
        }
