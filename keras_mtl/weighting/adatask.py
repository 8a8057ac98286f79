"""AdaTask: each task's gradient normalised by its own Adam moments on every shared parameter."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting.gradient_buffer import build_buffer, ensure_buffer
from keras_mtl.weighting.weighting import GradientWeighting


@keras_serializable
class AdaTask(GradientWeighting):
    """Task-wise adaptive learning rates (Yang, Pan, Li, Gong, Zhang,
    Cao, Shao and Chen, "AdaTask: A Task-Aware Adaptive Learning Rate
    Approach to Multi-Task Learning", AAAI 2023; reference behaviour: the
    authors' `Adam_with_AdaTask` optimizer).

    Why: Adam divides each parameter's step by the running root mean square
    of its gradient. On a shared parameter that running mean is accumulated
    over the sum of the task gradients, so the task with the largest
    gradient there sets every task's step size on it ("task dominance" in
    the paper), whatever the norms of the whole gradients are. AdaTask keeps
    Adam's moments per task on every shared parameter, so each task's step
    is normalised by its own history.

    The rule, per step, for every task t with labels in the batch (counted
    in its own step number k_t) and every shared parameter:

        m_t <- beta_1 m_t + (1 - beta_1) g_t
        v_t <- beta_2 v_t + (1 - beta_2) g_t^2
        d   =  sum_t (m_t / (1 - beta_1^k_t)) / (sqrt(v_t / (1 - beta_2^k_t)) + epsilon)

    The reference applies `-lr d` to the shared parameters itself; here `d`
    is the direction handed to the model's optimizer. With
    `keras.optimizers.SGD(lr)` the shared update is the reference's; with
    Adam (the recipes' AdamW) the optimizer normalises `d` once more, which
    keeps the per-parameter balance between the tasks and sets the overall
    step size to Adam's. The heads get their own task's gradient, as in the
    reference. An absent task neither updates its moments nor adds to `d`.
    The moments are two `(T, D)` buffers, D = the number of shared
    parameters, created when the model is built and saved with it.

    Defined per parameter, so `rep_grad=True` raises (the shared features'
    gradients of different batches are not comparable vectors).

    Logged weights: the root mean square of each task's normalised term
    (1 at a task's first step; smaller when its gradient's sign flips
    from step to step).

    Args:
        beta_1, beta_2, epsilon: Adam's constants for the per-task moments
            (the reference's defaults).
        rep_grad: must be `False`.

    Example:

    >>> weighting = AdaTask()
    >>> weighting.set_tasks([Classification("a", 2), Classification("b", 2)])
    >>> weighting.build_gradient_state(2)
    >>> np.round(weighting.aggregate(np.array([[2.0, 0.0], [0.0, -0.5]], "float32")), 4)
    array([ 1., -1.], dtype=float32)
    """

    supports_rep_grad = False

    def __init__(self, beta_1=0.9, beta_2=0.999, epsilon=1e-8, rep_grad=False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        for name, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= float(value) < 1.0:
                raise ValueError(f"AdaTask's {name} must be in [0, 1), got {value}.")
        if float(epsilon) <= 0.0:
            raise ValueError(f"AdaTask's epsilon must be > 0, got {epsilon}.")
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def build_state(self, num_tasks):
        self.task_steps = self.add_weight(shape=(num_tasks,), initializer="zeros",
                                          trainable=False, name="task_steps")

    def build_gradient_state(self, gradient_dim):
        """Creates the `(T, D)` first and second moments of the task gradients."""
        build_buffer(self, "first_moments", gradient_dim, "first_moments")
        build_buffer(self, "second_moments", gradient_dim, "second_moments")

    def compute_direction(self, grads, losses, present):
        first = ensure_buffer(self, "first_moments", grads.shape[1], "first_moments")
        second = ensure_buffer(self, "second_moments", grads.shape[1], "second_moments")
        labelled = present[:, None] > 0.0  # (T, 1)
        steps = self.task_steps + present  # (T,) each task counts its own labelled steps
        self.task_steps.assign(steps)
        m = ops.where(labelled, self.beta_1 * first + (1.0 - self.beta_1) * grads, first)  # (T, D)
        v = ops.where(labelled, self.beta_2 * second + (1.0 - self.beta_2) * ops.square(grads),
                      second)  # (T, D)
        first.assign(m)
        second.assign(v)
        safe_steps = ops.maximum(steps, 1.0)[:, None]  # (T, 1)
        m_hat = m / (1.0 - ops.power(self.beta_1, safe_steps))  # (T, D)
        v_hat = v / (1.0 - ops.power(self.beta_2, safe_steps))  # (T, D)
        terms = ops.where(labelled, m_hat / (ops.sqrt(v_hat) + self.epsilon), 0.0)  # (T, D)
        rms = ops.sqrt(ops.mean(ops.square(terms), axis=1))  # (T,)
        return ops.sum(terms, axis=0), rms

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}
