"""Learning rates of the trunk: a copy of the heads' optimizer at a fraction of its rate."""

import keras


def trunk_learning_rate(optimizer, factor):
    """A fresh copy of `optimizer` whose learning rate is `factor` times its own.

    A learning rate schedule is wrapped in `ScaledSchedule`. Use it as the
    `trunk_optimizer` of `MultiTaskModel.compile` for a trunk learning rate
    that follows the heads' schedule at a fraction of it.

    Args:
        optimizer: a `keras.optimizers.Optimizer` (its config is copied, not
            its state); a `LossScaleOptimizer` gives a copy of its inner one.
        factor: float > 0.

    Returns:
        A new optimizer of the same class.

    Example:

    >>> heads = keras.optimizers.AdamW(1e-3)
    >>> trunk = trunk_learning_rate(heads, 0.1)
    >>> round(float(trunk.learning_rate), 6)
    0.0001
    """
    optimizer = keras.optimizers.get(optimizer)
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    if not float(factor) > 0:
        raise ValueError(f"The trunk learning rate factor must be > 0, got {factor!r}.")
    config = optimizer.get_config()
    config.pop("name", None)
    learning_rate = config["learning_rate"]  # a float, or a serialized schedule
    if isinstance(learning_rate, dict):
        schedule = keras.saving.deserialize_keras_object(learning_rate)
        config["learning_rate"] = ScaledSchedule(schedule, factor)
    else:
        config["learning_rate"] = float(learning_rate) * float(factor)
    return type(optimizer).from_config(config)


@keras.saving.register_keras_serializable(package="keras_mtl")
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate schedule multiplied by a constant factor.

    Args:
        schedule: a `LearningRateSchedule` (or its serialized config).
        factor: float multiplier.

    Example:

    >>> schedule = ScaledSchedule(keras.optimizers.schedules.ExponentialDecay(1.0, 10, 0.5), 0.1)
    >>> round(float(schedule(10)), 6)
    0.05
    """

    def __init__(self, schedule, factor):
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule)
        self.schedule = schedule
        self.factor = float(factor)

    def __call__(self, step):
        return self.schedule(step) * self.factor

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(self.schedule),
                "factor": self.factor}
