"""SDMGrad: MGDA's direction pulled towards the mean gradient, on a double-sampled Gram."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting import solvers
from keras_mtl.weighting.gradient_buffer import PreviousBatchGram
from keras_mtl.weighting.weighting import GradientWeighting


@keras_serializable
class SDMGrad(PreviousBatchGram, GradientWeighting):
    """Stochastic direction-oriented multi-objective gradient descent (Xiao,
    Ban and Ji, "Direction-oriented Multi-objective Learning: Simple and
    Provable Stochastic Algorithms", NeurIPS 2023; reference behaviour:
    LibMTL's `SDMGrad`, from the official code `OptMN-Lab/sdmgrad`, and
    TorchJD's `SDMGradWeighting`).

    The update is kept near a preferred direction, the mean gradient `g_0 =
    J^T w~` (`w~` uniform): with weights `w` on the simplex,

        min_w  1/2 ||J^T (w + lambda w~)||^2,      d = J^T (w + lambda w~) / (1 + lambda),

    `lambda = 0` is MGDA, a large `lambda` the mean gradient. As in the
    reference, the Gram matrix is estimated without bias from two
    independent mini-batches, `A = J_1 J_2^T`, divided by the squared mean
    of `sqrt(A_tt)` (scale-free steps), and `w` (start uniform, kept
    across steps) takes `iterations` projected SGD steps with momentum
    (`learning_rate`, `momentum`; the momentum restarts every step) on the
    gradient `A (w + lambda w~)`. The reference computes three batches per
    step; a Keras train step has one, so here `J_1` is the previous step's
    Jacobian (a `(T, D)` buffer, D = the number of shared parameters, saved
    with the model) and `J_2 = J_3` this step's: consecutive batches are
    independent draws, at parameters one update apart. At the first step
    (or for a task not seen before) this batch's gradient stands in for the
    previous one. The inner loop is a `fori_loop` of fixed length, the
    projection `solvers.project_simplex`. With the reference's step size
    the inner iterations do not settle (they bounce between faces of the
    simplex), so the weights vary with float rounding at the 1e-3 level,
    as the reference's do; a smaller `learning_rate` converges.
    `rep_grad=True` raises, as in LibMTL.

    Missing labels: the problem is restricted to the present tasks (`w~`
    uniform over them); an absent task's weight and stored gradient are
    kept, the present weights are renormalised to sum 1 for the solve and
    stored back with the mass they had. Logged weights: the coefficients
    `(w + lambda w~) / (1 + lambda)` of `d`.

    Args:
        lamda: `lambda >= 0`, the pull towards the mean gradient (LibMTL:
            0.3; spelled as in LibMTL, `lambda` being a Python keyword).
        learning_rate: inner SGD step size (LibMTL: 5).
        momentum: inner SGD momentum (0.5).
        iterations: inner steps per training step (20).
        rep_grad: must be `False`.

    Example:

    >>> from keras_mtl.tasks import Classification
    >>> weighting = SDMGrad(lamda=0.0, learning_rate=0.5, iterations=60)
    >>> weighting.set_tasks([Classification("a", 2), Classification("b", 2)])
    >>> grads = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
    >>> np.round(weighting.aggregate(grads), 4)  # lambda = 0: MGDA's min-norm point
    array([0.8, 0.4], dtype=float32)
    """

    supports_rep_grad = False
    weights_state_name = "w"

    def __init__(self, lamda=0.3, learning_rate=5.0, momentum=0.5, iterations=20, rep_grad=False,
                 **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        if not float(lamda) >= 0.0:
            raise ValueError(f"SDMGrad lamda must be >= 0, got {lamda}.")
        self.lamda = float(lamda)
        self.learning_rate = float(learning_rate)
        self.momentum = float(momentum)
        self.iterations = int(iterations)
        self.previous_gradients = None

    def compute_direction(self, grads, losses, present):
        products = self.previous_batch_products(grads, present)  # (T, T) J_1 J_2^T
        count = ops.maximum(ops.sum(present), 1.0)
        scale = ops.sum(ops.sqrt(ops.maximum(ops.diagonal(products), 0.0))) / count  # ()
        products = products / (ops.square(scale) + 1e-8)  # (T, T)
        preferred = present / count  # (T,) w~
        stored = ops.convert_to_tensor(self.task_weights_state)  # (T,)
        mass = ops.sum(stored * present)  # () held by the present tasks
        start = stored * present / ops.maximum(mass, 1e-30)  # (T,) sum 1 over present

        def sgd_step(i, state):
            weights, velocity = state
            gradient = ops.matmul(products, weights + self.lamda * preferred)  # (T,)
            velocity = self.momentum * velocity + gradient
            weights = solvers.project_simplex(weights - self.learning_rate * velocity, present)
            return weights, velocity

        weights, _ = ops.fori_loop(0, self.iterations, sgd_step, (start, ops.zeros_like(start)))
        self.task_weights_state.assign(ops.where(present > 0.0, mass * weights, stored))
        combined = (weights + self.lamda * preferred) / (1.0 + self.lamda) * present  # (T,)
        return solvers.combine(combined, grads), combined

    def get_config(self):
        return {**super().get_config(), "lamda": self.lamda, "learning_rate": self.learning_rate,
                "momentum": self.momentum, "iterations": self.iterations}
