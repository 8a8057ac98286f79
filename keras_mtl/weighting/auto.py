"""`"auto"`: the weighting to use when you do not want to choose one."""

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting.calibrated import CalibratedGradientBalancing
from keras_mtl.weighting.fairgrad import FairGrad


@keras_serializable
class AutoWeighting(CalibratedGradientBalancing):
    """The weighting to use when you do not want to choose: `"auto"`.

    Today this is `CalibratedGradientBalancing` (`"calibrated"`) at the
    shared features (`rep_grad=True`, `calibration_steps=100`): each task's
    gradient at the shared features is scaled by the inverse of its mean
    norm over its first 100 labelled steps (the equal-norm target of
    GradNorm, Chen et al., ICML 2018, in closed form and then held), so no
    task drives the trunk because its gradient there happens to be larger,
    and a task that is learnt fades instead of being amplified. Chosen on the
    leaderboard of `benchmarks/leaderboard.py` at the recipe's full budget
    (the README's "Which weighting should I use?"); it costs one backward
    pass through the trunk, as equal weighting does.

    From 2026-11-28 to 29 `"auto"` was FairGrad at the shared features
    (`"fairgrad"` with `rep_grad=True`): it led the short screening runs but
    trailed this method at the full budget over 3 seeds, so `"auto"` went
    back. A model saved in those days still loads with the weighting it was
    trained with: its config, which has FairGrad's `alpha`, is restored as
    `FairGrad`.

    Args:
        calibration_steps: labelled steps per task over which its gradient
            norm is averaged; the weights are fixed afterwards.
        rep_grad: measure and combine the gradients at the shared features
            (default) or, `False`, at the shared parameters.

    Example:

    >>> weighting = AutoWeighting()
    >>> weighting.rep_grad, weighting.calibration_steps
    (True, 100)
    """

    def __init__(self, calibration_steps=100, rep_grad=True, **kwargs):
        super().__init__(calibration_steps=calibration_steps, rep_grad=rep_grad, **kwargs)

    @classmethod
    def from_config(cls, config):
        if "alpha" in config:  # saved when "auto" was FairGrad (2026-11-28 to 29)
            return FairGrad.from_config(config)
        return super().from_config(config)
