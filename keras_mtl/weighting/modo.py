"""MoDo: MGDA's weights by one projected step a batch, on a double-sampled Gram matrix."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting import solvers
from keras_mtl.weighting.gradient_buffer import PreviousBatchGram
from keras_mtl.weighting.weighting import GradientWeighting


@keras_serializable
class MoDo(PreviousBatchGram, GradientWeighting):
    """Multi-objective gradient with double sampling (Chen, Fernando, Ying
    and Chen, "Three-Way Trade-Off in Multi-Objective Learning:
    Optimization, Generalization and Conflict-Avoidance", NeurIPS 2023 /
    JMLR 2024; reference behaviour: LibMTL's `MoDo`, from the authors' code
    `heshandevaka/Trade-Off-MOL`).

    Instead of solving MGDA's min-norm problem each step, MoDo takes one
    projected gradient step on the weights `lambda` (start uniform) per
    training step,

        lambda <- Proj_simplex(lambda - gamma (J_1 J_2^T lambda + rho lambda)),
        d = J_3^T lambda,

    where `J_1`, `J_2`, `J_3` are the task Jacobians of independent
    mini-batches: `J_1 J_2^T` is an unbiased estimate of the Gram matrix
    (a single batch's `J J^T` is biased, which is what breaks stochastic
    MGDA). The reference computes three batches per step. A Keras train
    step has one batch, so here `J_1` is the previous step's Jacobian (kept
    in a `(T, D)` buffer, D = the number of shared parameters, saved with
    the model) and `J_2 = J_3` this step's: consecutive batches are
    independent draws, at parameters one update apart. At the first step
    (or for a task not seen before) this batch's gradient stands in for
    the previous one. The projection onto the simplex is the reference's;
    it reuses `solvers.project_simplex`. `rep_grad=True` raises, as in
    LibMTL (feature gradients of different batches are different vectors).

    Missing labels: an absent task's weight and stored gradient are kept;
    the step runs on the present tasks' weights renormalised to sum 1,
    which are stored back with the mass they had. Logged weights: that
    step's `lambda` (0 for absent tasks).

    Args:
        gamma: step size of the weights (LibMTL: 0.001).
        rho: L2 regularisation of the weights (LibMTL: 0.1).
        rep_grad: must be `False`.

    Example:

    >>> from keras_mtl.tasks import Classification
    >>> weighting = MoDo(gamma=0.1, rho=0.0)
    >>> weighting.set_tasks([Classification("a", 2), Classification("b", 2)])
    >>> grads = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
    >>> np.round(weighting.aggregate(grads), 4)  # lambda = proj((0.45, 0.3)) = (0.575, 0.425)
    array([0.575, 0.85 ], dtype=float32)
    """

    supports_rep_grad = False
    weights_state_name = "lambda"

    def __init__(self, gamma=0.001, rho=0.1, rep_grad=False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        self.gamma = float(gamma)
        self.rho = float(rho)
        self.previous_gradients = None

    def compute_direction(self, grads, losses, present):
        products = self.previous_batch_products(grads, present)  # (T, T) J_1 J_2^T
        stored = ops.convert_to_tensor(self.task_weights_state)  # (T,)
        mass = ops.sum(stored * present)  # () held by the present tasks
        weights = stored * present / ops.maximum(mass, 1e-30)  # (T,) sum 1 over present
        step = ops.matmul(products, weights) + self.rho * weights  # (T,)
        weights = solvers.project_simplex(weights - self.gamma * step, present)  # (T,)
        self.task_weights_state.assign(ops.where(present > 0.0, mass * weights, stored))
        return solvers.combine(weights, grads), weights

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "rho": self.rho}
