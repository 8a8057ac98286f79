"""The task base class: a named head with its loss, metrics, decoder and checks."""

import keras
import tensorflow as tf
from keras import ops

from keras_mtl.registry import Configurable, keras_serializable  # noqa: F401 (re-exported)


class Task(Configurable):
    """Base class of a task: head + loss + metrics + decoder + target checks.

    A task is a recipe, not a layer: `build_head` creates the head layers on
    the trunk's pyramid features inside the Functional graph, and the
    `MultiTaskModel` calls the other methods in its train, test and predict
    steps. Subclasses implement every method below that raises
    `NotImplementedError`, and list their constructor arguments in
    `get_config`.

    Args:
        name: the task's name: the key of its targets, outputs and logs.
        uncertainty_form: `"classification"` or `"regression"`, the form of
            the task's term in uncertainty weighting (Kendall et al. 2018).
    """

    uncertainty_form = "classification"

    def __init__(self, name):
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(
                f"A task name must be a Python identifier (it names outputs and logs), got {name!r}."
            )
        self.name = name

    # --- graph ---------------------------------------------------------------
    def build_head(self, features, image_shape):
        """Creates the head on `features` (`{"P2": (B, H/4, W/4, C), ...}`).

        Returns the raw output tensor (logits, regressions) in float32.
        """
        raise NotImplementedError

    # --- training ------------------------------------------------------------
    def compute_loss(self, y_true, y_pred, sample_weight=None):
        """Returns `(loss, num_labelled)`: the mean loss over labelled
        elements (0 when there are none) and how many there were."""
        raise NotImplementedError

    def build_metrics(self):
        """A list of fresh `keras.metrics.Metric`, named `<task>_<metric>`."""
        return []

    def update_metrics(self, metrics, y_true, y_pred, sample_weight=None):
        """Updates the metrics made by `build_metrics` with one batch."""

    # --- inference -----------------------------------------------------------
    def decode(self, y_pred):
        """Maps the raw output to a dict of named, user-facing outputs."""
        raise NotImplementedError

    # --- input checks ----------------------------------------------------------
    def check_targets(self, y_true, image_shape):
        """Checks one batch of targets; returns them, checked.

        Static problems (dtype, rank, size) raise `ValueError` at once; value
        problems (class id out of range, NaN) become `tf.debugging` assertions
        that fail when the batch is read. Messages name the task.
        """
        return y_true

    def error(self, message):
        """A `ValueError` whose message names this task."""
        return ValueError(f"Task '{self.name}' ({type(self).__name__}): {message}")

    # --- serialisation ---------------------------------------------------------
    def get_config(self):
        return {"name": self.name}


def labelled_mean(values, mask):
    """Mean of `values` where `mask` > 0, weighted by `mask`; 0 if none.

    Returns `(mean, total_weight)`. The gradient is exactly zero when the
    mask is all zeros, so a task without labels in a batch never makes NaN.
    """
    values = ops.cast(values, "float32")
    mask = ops.cast(mask, "float32")
    total_weight = ops.sum(mask)
    mean = ops.sum(values * mask) / ops.maximum(total_weight, 1e-12)
    return mean, total_weight


def broadcast_sample_weight(sample_weight, like):
    """Broadcasts per-sample weights `(B,)` to the rank of `like` `(B, ...)`."""
    if sample_weight is None:
        return ops.ones_like(like, dtype="float32")
    sample_weight = ops.cast(sample_weight, "float32")
    while len(sample_weight.shape) < len(like.shape):
        sample_weight = ops.expand_dims(sample_weight, -1)
    return ops.broadcast_to(sample_weight, ops.shape(like))


def assert_in_range(values, low, high, task_name, what, allowed=None):
    """A `tf.debugging` check that integer `values` lie in [low, high)
    (or equal `allowed`); returns `values` with the check attached."""
    values = tf.convert_to_tensor(values)
    ok = tf.logical_and(values >= low, values < high)
    if allowed is not None:
        ok = tf.logical_or(ok, tf.equal(values, allowed))
    extra = f" or {allowed}" if allowed is not None else ""
    check = tf.debugging.Assert(
        tf.reduce_all(ok),
        [f"Task '{task_name}': {what} out of range [{low}, {high}){extra}; got min",
         tf.reduce_min(values), "max", tf.reduce_max(values)],
        summarize=4,
    )
    with tf.control_dependencies([check]):
        return tf.identity(values)


def require_integer(tensor, task, what):
    """Raises the task's error unless `tensor` has an integer dtype."""
    dtype = tf.as_dtype(tensor.dtype)
    if not dtype.is_integer:
        raise task.error(f"{what} must be integer class ids, got dtype {dtype.name}.")


def as_float32(x):
    """Casts to float32 (losses run in float32 under mixed precision)."""
    return ops.cast(x, "float32")

