"""`"auto"`: the weighting to use when you do not want to choose one."""

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting.calibrated import CalibratedGradientBalancing
from keras_mtl.weighting.fairgrad import FairGrad


@keras_serializable
class AutoWeighting(FairGrad):
    """The weighting to use when you do not want to choose: `"auto"`.

    Today this is FairGrad (Ban and Ji, "Fair Resource Allocation in
    Multi-Task Learning", ICML 2024; reference code `OptMN-Lab/fairgrad`)
    with proportional fairness (`alpha=1`), on the gradients at the shared
    features (`rep_grad=True`): each step, the weights `w` solve
    `(G w)_t = 1 / w_t` for the Gram matrix `G` of the tasks' gradients, so
    every task's first-order loss decrease `g_t . d` is `1 / w_t`, whatever
    the size of its loss or gradient, and a task whose gradient conflicts
    with the others' gets more weight. Chosen on the leaderboard of
    `benchmarks/leaderboard.py` (the README's "Which weighting should I
    use?"). At the shared features it costs one backward pass through the
    trunk, as equal weighting does; `"fairgrad"` (the paper's setting, on
    the shared parameters) costs one per task.

    The weights are in units of an inverse gradient norm, so the logged
    total `loss` is large; adaptive optimizers (Adam, AdamW) ignore that
    overall scale, while plain SGD sees it as a larger learning rate.

    Until 2026-11-28, `"auto"` was `CalibratedGradientBalancing`
    (`rep_grad=True`, `calibration_steps=100`; now `"calibrated"`). A model
    saved with that `"auto"` still loads: its config, which has
    `calibration_steps`, is restored as `CalibratedGradientBalancing`.

    Example:

    >>> weighting = AutoWeighting()
    >>> weighting.alpha, weighting.rep_grad
    (1.0, True)
    """

    def __init__(self, alpha=1.0, rep_grad=True, **kwargs):
        if float(alpha) != 1.0 or not rep_grad:
            raise ValueError(
                f'"auto" has fixed settings (alpha=1, rep_grad=True); got alpha={alpha}, '
                f'rep_grad={rep_grad}. For other settings use "fairgrad", e.g. '
                f'weighting.get("fairgrad", alpha={alpha}, rep_grad={rep_grad}).')
        super().__init__(alpha=1.0, rep_grad=True, **kwargs)

    @classmethod
    def from_config(cls, config):
        if "calibration_steps" in config:  # saved when "auto" was calibrated balancing
            return CalibratedGradientBalancing.from_config(config)
        return super().from_config(config)
