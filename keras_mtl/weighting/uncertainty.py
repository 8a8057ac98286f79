"""Uncertainty weighting: learned homoscedastic task uncertainty."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting.weighting import LossWeighting

FORMS = ("classification", "regression")


@keras_serializable
class UncertaintyWeighting(LossWeighting):
    """Learns one log-variance per task (Kendall, Gal and Cipolla, "Multi-Task
    Learning Using Uncertainty to Weigh Losses for Scene Geometry and
    Semantics", CVPR 2018).

    With `s_t = log(sigma_t^2)` learned, the scalar minimised is

        sum_t  c_t * exp(-s_t) * L_t + s_t / 2

    where `c_t = 1` for the classification form (softmax likelihood with a
    temperature, eq. 10 of the paper) and `c_t = 1/2` for the regression
    form (Gaussian likelihood, eq. 7). The logged weight of task t is
    `c_t * exp(-s_t)`. A task without labels in a batch contributes neither
    term, so its `s_t` gets zero gradient.

    Args:
        forms: optional dict `{task_name: "classification" | "regression"}`;
            tasks not named use their own `uncertainty_form`
            (classification and segmentation: "classification").
        initial_log_variance: starting value of every `s_t`.

    Example:

    >>> weighting = UncertaintyWeighting()
    >>> weighting.set_tasks([Classification("a", 2), Classification("b", 2)])
    >>> float(weighting(np.array([1.0, 2.0]), np.array([1.0, 1.0])))  # s = 0
    3.0
    """

    def __init__(self, forms=None, initial_log_variance=0.0, **kwargs):
        super().__init__(**kwargs)
        self.forms = dict(forms or {})
        for task, form in self.forms.items():
            if form not in FORMS:
                raise ValueError(f"Uncertainty form of task '{task}' must be one of {FORMS}, got {form!r}.")
        self.initial_log_variance = float(initial_log_variance)

    def set_tasks(self, tasks):
        unknown = sorted(set(self.forms) - {task.name for task in tasks})
        if unknown:
            raise ValueError(f"Uncertainty forms name unknown tasks {unknown}.")
        super().set_tasks(tasks)

    def build_state(self, num_tasks):
        self.log_variance = self.add_weight(
            shape=(num_tasks,), name="log_variance",
            initializer=lambda shape, dtype: ops.full(shape, self.initial_log_variance, dtype),
        )

    def _scales(self):
        forms = [self.forms.get(name, form) for name, form in zip(self.task_names, self.task_forms)]
        return ops.convert_to_tensor([1.0 if f == "classification" else 0.5 for f in forms], "float32")

    def call(self, losses, present, training=False):
        weights = self.compute_weights(losses, present, training)  # (T,)
        if training:
            self.weights_variable.assign(weights)
        return ops.sum(present * (weights * losses + 0.5 * self.log_variance))

    def compute_weights(self, losses, present, training):
        return self._scales() * ops.exp(-ops.convert_to_tensor(self.log_variance))

    def get_config(self):
        return {
            **super().get_config(),
            "forms": dict(self.forms),
            "initial_log_variance": self.initial_log_variance,
        }
