"""Checks of batches against the data contract, with errors that name the task."""

import re

import tensorflow as tf

_FAILED = re.compile(r"assertion failed: (.*?)\n", re.S)


def unpack_batch(data, task_names):
    """Splits a batch into `(images, targets, sample_weights)` dicts.

    Accepts `(images, targets)` or `(images, targets, sample_weights)` where
    `targets` and `sample_weights` are dicts keyed by task name. A target
    or weight key that is not a task raises a `ValueError` listing the tasks.
    """
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
        raise ValueError(
            "A batch must be (images, targets) or (images, targets, sample_weights) with "
            f"targets a dict keyed by task name; got {type(data).__name__} of length "
            f"{len(data) if isinstance(data, (tuple, list)) else 1}."
        )
    images, targets = data[0], data[1]
    sample_weights = data[2] if len(data) == 3 else None
    targets = _task_dict(targets, task_names, "targets")
    sample_weights = _task_dict(sample_weights, task_names, "sample weights")
    return images, targets, sample_weights


def _task_dict(values, task_names, what):
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(
            f"The {what} must be a dict keyed by task name ({', '.join(task_names)}), "
            f"got {type(values).__name__}."
        )
    unknown = sorted(set(values) - set(task_names))
    if unknown:
        raise ValueError(
            f"The {what} name unknown task(s) {unknown}; the model's tasks are {list(task_names)}."
        )
    return dict(values)


def check_images(images, image_shape):
    """Checks the rank, size and values of an image batch; returns it."""
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"Images must have shape (B, {', '.join(map(str, image_shape))}), got {images.shape}."
        )
    if images.dtype.is_floating:
        check = tf.debugging.Assert(
            tf.reduce_all(tf.math.is_finite(images)), ["Images contain NaN or infinite pixels."]
        )
        with tf.control_dependencies([check]):
            images = tf.identity(images)
    elif not images.dtype.is_integer:
        raise ValueError(f"Images must be uint8 or float, got dtype {images.dtype.name}.")
    return images


def check_sample_weight(weight, task):
    """Checks a per-sample weight vector `(B,)` of `task`."""
    weight = tf.convert_to_tensor(weight)
    if weight.shape.rank != 1:
        raise task.error(f"sample weights must have shape (B,), got {weight.shape}.")
    check = tf.debugging.Assert(
        tf.reduce_all(tf.math.is_finite(tf.cast(weight, tf.float32)) & (weight >= 0)),
        [f"Task '{task.name}': sample weights must be finite and >= 0."],
    )
    with tf.control_dependencies([check]):
        return tf.identity(weight)


def check_batch(batch, tasks, image_shape):
    """Checks one batch against `tasks`; returns it with the checks attached.

    Static problems raise `ValueError` at once (at trace time inside
    `tf.data`); value problems fail with `InvalidArgumentError` naming the
    task when the batch is read.
    """
    names = [task.name for task in tasks]
    images, targets, sample_weights = unpack_batch(tuple(batch), names)
    images = check_images(images, image_shape)
    by_name = {task.name: task for task in tasks}
    targets = {name: by_name[name].check_targets(y, image_shape) for name, y in targets.items()}
    sample_weights = {
        name: check_sample_weight(w, by_name[name]) for name, w in sample_weights.items()
    }
    if len(batch) == 3:
        return images, targets, sample_weights
    return images, targets


def readable_check_error(error):
    """Turns a failed data check deep in a tf.data graph into a `ValueError`.

    Returns `None` if `error` is not one of this module's checks. The
    message keeps the check's own words, e.g. "Task 'label': class id out of
    range [0, 3) or -1; got min 1 max 3".
    """
    match = _FAILED.search(getattr(error, "message", str(error)))
    if not match or ("Task " not in match.group(1) and "Images " not in match.group(1)):
        return None
    text = match.group(1).replace("\\'", "'").strip()
    parts = text.removeprefix("[").removesuffix("]").split("] [")  # tf.Assert's data items
    return ValueError(" ".join(part.strip() for part in parts) + " (found while reading the data)")
