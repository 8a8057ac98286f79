"""MoCo: MGDA-like weights on moving averages of the task gradients."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting import solvers
from keras_mtl.weighting.gradient_buffer import build_buffer, ensure_buffer
from keras_mtl.weighting.weighting import GradientWeighting

_VERY_NEGATIVE = -1e30  # stands for -inf in a masked softmax


def masked_softmax(logits, mask):
    """Softmax of `logits` `(T,)` over the entries where `mask` `(T,)` is 1, 0 elsewhere."""
    peak = ops.max(ops.where(mask > 0.0, logits, _VERY_NEGATIVE))
    exps = ops.where(mask > 0.0, ops.exp(ops.where(mask > 0.0, logits - peak, 0.0)), 0.0)
    return exps / ops.maximum(ops.sum(exps), 1e-30)


@keras_serializable
class MoCo(GradientWeighting):
    """Multi-objective gradient correction (Fernando, Shen, Liu, Chaudhury,
    Murugesan and Chen, "Mitigating Gradient Bias in Multi-objective
    Learning: A Provably Convergent Approach", ICLR 2023; reference
    behaviour: LibMTL's `MoCo`, from the authors' code, and TorchJD's
    `torchjd.aggregation.MoCo`).

    MGDA's weights computed from one mini-batch are a biased estimate; MoCo
    tracks each task's gradient with a moving average `y_t` and takes one
    step on the weights per training step. At step k (from 1), with
    `beta_k = beta / k^beta_sigma` and `gamma_k = gamma / k^gamma_sigma`:

        g~_t = L_t g_t / ||g_t||                       (LibMTL's scaling)
        y_t <- y_t - beta_k (y_t - g~_t)
        lambda <- softmax(lambda - gamma_k (Y Y^T + rho I) lambda)
        d = Y^T lambda

    (`lambda` starts uniform, `y` at 0; the softmax of the stepped weights
    is the reference's update). The moving averages are a `(T, D)` buffer,
    D = the number of shared parameters, created when the model is built
    (`build_gradient_state`), saved and restored with the model; as in
    LibMTL, `rep_grad=True` raises (the shared features' gradients of
    different batches are not comparable vectors).

    Missing labels: an absent task's average is untouched and it is left
    out of the softmax (its `lambda_t` is kept; the present tasks' weights
    share the mass they had); `d` combines the present tasks' averages with
    their weights renormalised to sum 1. Logged weights: those renormalised
    `lambda`. Needs the losses (`losses=None` raises).

    Args:
        beta, beta_sigma: step size of the moving averages and its decay
            exponent (LibMTL: 0.5, 0.5).
        gamma, gamma_sigma: step size of the weights and its decay exponent
            (LibMTL: 0.1, 0.5).
        rho: L2 regularisation of the weights' update (LibMTL: 0).
        rep_grad: must be `False`.

    Example:

    >>> from keras_mtl.tasks import Classification
    >>> weighting = MoCo()
    >>> weighting.set_tasks([Classification("a", 2), Classification("b", 2)])
    >>> grads = np.array([[2.0, 0.0], [0.0, 2.0]], "float32")
    >>> np.round(weighting.aggregate(grads, np.ones(2, "float32")), 4)  # y = g / (2 ||g||)
    array([0.25, 0.25], dtype=float32)
    """

    supports_rep_grad = False

    def __init__(self, beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5, rho=0.0,
                 rep_grad=False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        self.beta = float(beta)
        self.beta_sigma = float(beta_sigma)
        self.gamma = float(gamma)
        self.gamma_sigma = float(gamma_sigma)
        self.rho = float(rho)
        self.moving_gradients = None

    def build_state(self, num_tasks):
        self.step_count = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                          name="step")
        self.task_weights_state = self.add_weight(
            shape=(num_tasks,), trainable=False, name="lambda",
            initializer=lambda shape, dtype: ops.full(shape, 1.0 / num_tasks, dtype))

    def build_gradient_state(self, gradient_dim):
        """Creates the `(T, D)` moving averages of the task gradients."""
        build_buffer(self, "moving_gradients", gradient_dim, "moving_gradients")

    def compute_direction(self, grads, losses, present):
        if losses is None:
            raise ValueError("MoCo scales each gradient by its task's loss: pass the losses.")
        moving = ensure_buffer(self, "moving_gradients", grads.shape[1], "moving_gradients")
        self.step_count.assign_add(1.0)
        beta = self.beta / ops.power(self.step_count, self.beta_sigma)  # () beta_k
        gamma = self.gamma / ops.power(self.step_count, self.gamma_sigma)  # () gamma_k
        norms = ops.sqrt(ops.sum(ops.square(grads), axis=1))  # (T,)
        scaled = grads * (losses / (norms + 1e-8))[:, None]  # (T, D) L_t g_t / ||g_t||
        labelled = present[:, None] > 0.0  # (T, 1)
        averages = ops.where(labelled, moving - beta * (moving - scaled), moving)  # (T, D)
        moving.assign(averages)
        averages = averages * present[:, None]  # (T, D) absent rows out of the weights' step
        previous = ops.convert_to_tensor(self.task_weights_state)  # (T,)
        mass = ops.sum(previous * present)  # () held by the present tasks
        shares = previous * present / ops.maximum(mass, 1e-30)  # (T,) sum 1 over present
        num_tasks = grads.shape[0]
        quad = solvers.gram_matrix(averages) + self.rho * ops.eye(num_tasks)  # (T, T)
        shares = masked_softmax(shares - gamma * ops.matmul(quad, shares), present)  # (T,)
        self.task_weights_state.assign(ops.where(present > 0.0, mass * shares, previous))
        return solvers.combine(shares, averages), shares

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "beta_sigma": self.beta_sigma,
                "gamma": self.gamma, "gamma_sigma": self.gamma_sigma, "rho": self.rho}
