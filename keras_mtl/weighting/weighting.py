"""Base classes of task weightings: loss-based and gradient-based."""

import keras
from keras import ops


class Weighting(keras.layers.Layer):
    """Base class of every weighting: per-task state in float32 variables.

    A weighting is a Keras layer owned by the `MultiTaskModel`, so its
    variables (learned log-variances, loss histories, ...) are trained,
    saved and restored with the model. The model calls `set_tasks` once
    with its tasks; `weights` holds the current per-task weights, which
    `fit` logs as `weight/<task>`.

    Subclasses set `gradient_based`, create their state in `build_state`,
    and implement `call` (loss-based) or `aggregate` (gradient-based).
    """

    gradient_based = False

    def __init__(self, **kwargs):
        kwargs["dtype"] = "float32"  # learned weights stay float32 under mixed precision
        super().__init__(**kwargs)
        self.task_names = None
        self.task_forms = None

    def set_tasks(self, tasks):
        """Tells the weighting which tasks it weighs and creates its state.

        Args:
            tasks: the model's list of `Task` objects, in output order.
        """
        self.task_names = [task.name for task in tasks]
        self.task_forms = [task.uncertainty_form for task in tasks]
        if not self.built:  # a weighting restored from a config is built already
            self.build((len(tasks),))
        elif self.weights_variable.shape[0] != len(tasks):
            raise ValueError(
                f"{type(self).__name__} was built for {self.weights_variable.shape[0]} tasks, "
                f"the model has {len(tasks)}: {self.task_names}."
            )

    @property
    def num_tasks(self):
        return len(self.task_names)

    def build(self, input_shape):
        self.weights_variable = self.add_weight(
            shape=(input_shape[0],), initializer="ones", trainable=False, name="task_weights"
        )
        self.build_state(input_shape[0])
        self.built = True

    def build_state(self, num_tasks):
        """Creates the weighting's own variables; none by default."""

    def current_weights(self):
        """`(T,)` float32: the weights of the last step, for the logs."""
        return ops.convert_to_tensor(self.weights_variable)

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        return config


class LossWeighting(Weighting):
    """A weighting that maps per-task losses to one scalar to minimise.

    `call(losses, present, training)` takes `losses` `(T,)` (the mean loss of
    each task on the batch, 0 where it has no labels) and `present` `(T,)`
    (1.0 where the task has labels in the batch, else 0.0) and returns the
    scalar. A task that is not present must get zero gradient and leave the
    weighting's statistics untouched.
    """

    def call(self, losses, present, training=False):
        weights = self.compute_weights(losses, present, training)  # (T,)
        if training:
            self.weights_variable.assign(weights)
        return ops.sum(weights * losses * present)

    def compute_weights(self, losses, present, training):
        """`(T,)` per-task weights for this step."""
        raise NotImplementedError


class GradientWeighting(Weighting):
    """A weighting that combines per-task gradients into one direction.

    `aggregate(grads, losses)` takes `grads` `(T, D)` (row t: task t's
    gradient of the shared parameters or features, flattened) and returns
    the update direction `(D,)` that replaces the plain sum of the rows.
    """

    gradient_based = True
    supports_rep_grad = True

    def aggregate(self, grads, losses=None):
        raise NotImplementedError
