"""ExcessMTL: task weights raised by each task's estimated excess risk."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting import solvers
from keras_mtl.weighting.gradient_buffer import build_buffer, ensure_buffer
from keras_mtl.weighting.moco import masked_softmax
from keras_mtl.weighting.weighting import GradientWeighting


@keras_serializable
class ExcessMTL(GradientWeighting):
    """Robust multi-task learning with excess risks (He et al.,
    "Robust Multi-Task Learning with Excess Risks", ICML 2024;
    reference behaviour: LibMTL's `ExcessMTL`, from the authors' code
    `uiuctml/ExcessMTL`, and TorchJD's `ExcessMTLWeighting`).

    A task's excess risk, how far its loss is above the best it could
    reach, is estimated to second order as `g_t^T H_t^-1 g_t`, with the
    diagonal Hessian approximated AdaGrad-style by the running sum of
    squared gradients `S_t` (eq. 6-7):

        S_t <- S_t + g_t^2,     E_t = sum_d g_t[d]^2 / sqrt(S_t[d] + 1e-7).

    The first estimate of each task is its baseline `E_t^0`; from then on
    the weights take an exponentiated step towards the tasks with the
    largest relative excess risk (eq. 9),

        w_t <- w_t exp(eta E_t / E_t^0),    renormalised to sum T,

    and the update is `d = sum_t w_t g_t` (the gradient of `sum_t w_t L_t`).
    As in LibMTL the weights start at 1 and the baseline step makes no
    update. The step is taken in log space, so a large `eta E / E^0` does
    not overflow. `S` is a `(T, D)` buffer, D = the number of shared
    parameters, created when the model is built (`build_gradient_state`),
    saved and restored with the model; `rep_grad=True` raises (feature
    gradients of different batches are not comparable vectors).

    Missing labels: an absent task's sums, baseline and weight are
    untouched; the present tasks' weights are renormalised to the total
    they had. A task's baseline is taken at its first present step with a
    non-zero gradient. Logged weights: `w` (0 for an absent task).

    Args:
        robust_step_size: `eta > 0`, the step of the exponentiated update
            (TorchJD's default 1).
        rep_grad: must be `False`.

    Example:

    >>> from keras_mtl.tasks import Classification
    >>> weighting = ExcessMTL()
    >>> weighting.set_tasks([Classification("a", 2), Classification("b", 2)])
    >>> np.round(weighting.aggregate(np.array([[1.0, 0.0], [0.0, 2.0]], "float32")), 4)  # the sum
    array([1., 2.], dtype=float32)
    """

    supports_rep_grad = False

    def __init__(self, robust_step_size=1.0, rep_grad=False, **kwargs):
        super().__init__(rep_grad=rep_grad, **kwargs)
        if not float(robust_step_size) > 0.0:
            raise ValueError(f"ExcessMTL robust_step_size must be > 0, got {robust_step_size}.")
        self.robust_step_size = float(robust_step_size)
        self.squared_sums = None

    def build_state(self, num_tasks):
        def state(name, value):
            return self.add_weight(shape=(num_tasks,), trainable=False, name=name,
                                   initializer=lambda shape, dtype: ops.full(shape, value, dtype))

        self.loss_weights = state("loss_weights", 1.0)  # (T,) w
        self.baselines = state("baselines", 0.0)  # (T,) E^0, 0 until measured

    def build_gradient_state(self, gradient_dim):
        """Creates the `(T, D)` running sums of squared task gradients."""
        build_buffer(self, "squared_sums", gradient_dim, "squared_gradient_sums")

    def compute_direction(self, grads, losses, present):
        sums = ensure_buffer(self, "squared_sums", grads.shape[1], "squared_gradient_sums")
        labelled = present[:, None] > 0.0  # (T, 1)
        squares = ops.square(grads)  # (T, D)
        new_sums = ops.where(labelled, sums + squares, sums)  # (T, D)
        sums.assign(new_sums)
        excess = ops.sum(squares / ops.sqrt(new_sums + 1e-7), axis=1)  # (T,) E_t
        baselines = ops.convert_to_tensor(self.baselines)  # (T,)
        stepping = present * ops.cast(baselines > 0.0, "float32")  # (T,) have a baseline
        measured = present * ops.cast(excess > 0.0, "float32")
        self.baselines.assign(ops.where((stepping == 0.0) & (measured > 0.0), excess, baselines))
        previous = ops.convert_to_tensor(self.loss_weights)  # (T,)
        mass = ops.sum(previous * present)  # () kept by the present tasks
        ratio = stepping * excess / ops.where(baselines > 0.0, baselines, 1.0)  # (T,)
        logits = ops.log(ops.maximum(previous, 1e-30)) + self.robust_step_size * ratio
        weights = mass * masked_softmax(logits, present)  # (T,) renormalised in log space
        self.loss_weights.assign(ops.where(present > 0.0, weights, previous))
        return solvers.combine(weights, grads), weights

    def get_config(self):
        return {**super().get_config(), "robust_step_size": self.robust_step_size}
