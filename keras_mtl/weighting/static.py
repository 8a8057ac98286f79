"""Static weighting: fixed per-task weights given by the user."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting.weighting import LossWeighting


@keras_serializable
class StaticWeighting(LossWeighting):
    """Weighs each task's loss by a fixed number, like Keras' `loss_weights`.

    Args:
        weights: dict `{task_name: weight}` with an entry for every task.

    Raises:
        ValueError: when the dict names an unknown task, misses one, or has
            a negative or non-finite weight.

    Example:

    >>> weighting = StaticWeighting({"a": 1.0, "b": 0.5})
    >>> weighting.set_tasks([Classification("a", 2), Classification("b", 2)])
    >>> float(weighting(np.array([1.0, 2.0]), np.array([1.0, 1.0])))
    2.0
    """

    def __init__(self, weights, **kwargs):
        super().__init__(**kwargs)
        self.static_weights = {str(k): float(v) for k, v in dict(weights).items()}
        for task, value in self.static_weights.items():
            if not value >= 0.0 or value == float("inf"):
                raise ValueError(f"Static weight of task '{task}' must be finite and >= 0, got {value}.")

    def set_tasks(self, tasks):
        names = [task.name for task in tasks]
        unknown = sorted(set(self.static_weights) - set(names))
        missing = [name for name in names if name not in self.static_weights]
        if unknown or missing:
            raise ValueError(
                f"Static weights must name every task exactly: unknown {unknown}, missing {missing}; "
                f"the tasks are {names}."
            )
        super().set_tasks(tasks)

    def compute_weights(self, losses, present, training):
        values = [self.static_weights[name] for name in self.task_names]
        return ops.convert_to_tensor(values, "float32")

    def get_config(self):
        return {**super().get_config(), "weights": dict(self.static_weights)}
