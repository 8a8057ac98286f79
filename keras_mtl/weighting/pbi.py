"""PBI: distance along a preference ray plus a penalty on the distance to it."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting.weighting import LossWeighting

_SQRT_FLOOR = 1e-12  # under the square root of d2: a finite gradient on the ray itself


@keras_serializable
class PenaltyBoundaryIntersection(LossWeighting):
    """Penalty-based boundary intersection (Zhang and Li, "MOEA/D: A
    Multiobjective Evolutionary Algorithm Based on Decomposition", IEEE TEVC
    2007; reference behaviour: TorchJD's `torchjd.scalarization.PBI`).

    With the losses `L` `(T,)`, a reference (ideal) point `z` and a
    preference direction `w_hat = w / ||w||`, the losses relative to `z`
    are split into a part along the preference ray and a part across it:

        d1 = (L - z) . w_hat
        d2 = || (L - z) - d1 w_hat ||
        PBI = d1 + theta * d2

    Minimising `d1` lowers every loss; the penalty `theta d2` pulls the
    vector of losses onto the ray, i.e. towards the trade-off `L - z`
    proportional to `w`. The gradient with respect to the losses, the
    logged weight, is `w_hat + theta (L - z - d1 w_hat) / d2`: a task whose
    loss is above its share is weighted up, one below it weighted down (and
    with a large `theta` even pushed back up, as in the reference). As in
    TorchJD, `1e-12` is added under the square root of `d2` so that the
    gradient stays finite on the ray.

    A task without labels in a batch is left out: `L`, `z` and `w` are
    restricted to the labelled tasks (its term and gradient are zero and it
    keeps its last logged weight); with no labelled task the result is 0.

    Args:
        theta: penalty coefficient `theta >= 0` (MOEA/D's experiments: 5;
            0 is the projection on the preference direction).
        preferences: optional dict `{task_name: w_t >= 0}` naming every
            task; default: equal preferences.
        reference: optional dict `{task_name: z_t}` naming every task, a
            lower bound on the losses; default: 0 (losses are >= 0).

    Raises:
        ValueError: for a negative `theta` or preference, all-zero
            preferences, or dicts that do not name the tasks exactly.

    Example:

    >>> from keras_mtl.tasks import Classification
    >>> weighting = PenaltyBoundaryIntersection(theta=5.0)
    >>> weighting.set_tasks([Classification("a", 2), Classification("b", 2)])
    >>> round(float(weighting(np.array([1.0, 3.0]), np.ones(2))), 4)  # 2 sqrt 2 + 5 sqrt 2
    9.8995
    """

    def __init__(self, theta=5.0, preferences=None, reference=None, **kwargs):
        super().__init__(**kwargs)
        if not float(theta) >= 0.0:
            raise ValueError(f"PBI theta must be >= 0, got {theta}.")
        self.theta = float(theta)
        self.preferences = None if preferences is None else {
            str(k): float(v) for k, v in dict(preferences).items()}
        self.reference = None if reference is None else {
            str(k): float(v) for k, v in dict(reference).items()}
        if self.preferences is not None:
            values = list(self.preferences.values())
            if any(not v >= 0.0 for v in values) or not any(v > 0.0 for v in values):
                raise ValueError(f"PBI preferences must be >= 0 and not all 0, got {preferences}.")

    def set_tasks(self, tasks):
        names = [task.name for task in tasks]
        for label, mapping in (("preferences", self.preferences), ("reference", self.reference)):
            if mapping is not None and sorted(mapping) != sorted(names):
                raise ValueError(f"PBI {label} must name every task exactly: got "
                                 f"{sorted(mapping)}, the tasks are {names}.")
        super().set_tasks(tasks)

    def _per_task(self, mapping, default):
        values = [default if mapping is None else mapping[name] for name in self.task_names]
        return ops.convert_to_tensor(values, "float32")  # (T,)

    def call(self, losses, present, training=False):
        losses = ops.cast(losses, "float32")  # (T,)
        present = ops.cast(present, "float32")  # (T,)
        shifted = (losses - self._per_task(self.reference, 0.0)) * present  # (T,) L - z
        preference = self._per_task(self.preferences, 1.0) * present  # (T,)
        direction = preference / ops.maximum(ops.sqrt(ops.sum(ops.square(preference))), 1e-30)
        along = ops.sum(shifted * direction)  # () d1
        across = shifted - along * direction  # (T,)
        distance = ops.sqrt(ops.sum(ops.square(across)) + _SQRT_FLOOR)  # () d2
        labelled = ops.sum(present) > 0.0
        total = ops.where(labelled, along + self.theta * distance, 0.0)
        if training:
            weights = ops.stop_gradient(direction + self.theta * across / distance)  # (T,) dPBI/dL
            self.weights_variable.assign(ops.where(present > 0.0, weights, self.weights_variable))
        return total

    def get_config(self):
        return {**super().get_config(), "theta": self.theta, "preferences": self.preferences,
                "reference": self.reference}
