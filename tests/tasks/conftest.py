"""The contract every `keras_mtl.tasks.Task` keeps, as one reusable check.

In the style of keras-hub's `run_task_test`: a new task (ours or a user's) passes
`run_task_contract(task, labelled, unlabelled)` with one labelled batch of targets and,
where the task has a per-label "missing" marker, the same batch with every label
missing. Tests get it as the `task_contract` fixture.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import keras_mtl

IMAGE_SHAPE = (32, 32, 3)


def _head_model(task):
    trunk = keras_mtl.trunks.get("micro_resnet", input_shape=IMAGE_SHAPE, weights=None)
    images = keras.Input(IMAGE_SHAPE)
    output = task.build_head(trunk(images), IMAGE_SHAPE)
    return keras.Model(images, output)


def _head_gradients(task, model, images, targets, sample_weight=None):
    with tf.GradientTape() as tape:
        loss, count = task.compute_loss(targets, model(images, training=True), sample_weight)
    grads = tape.gradient(loss, model.trainable_variables)
    return loss, count, grads


def _assert_masked(task, model, images, targets, sample_weight=None):
    loss, count, grads = _head_gradients(task, model, images, targets, sample_weight)
    assert float(loss) == 0.0 and float(count) == 0.0, (float(loss), float(count))
    assert all(g is None or not np.any(ops.convert_to_numpy(g)) for g in grads)


def run_task_contract(task, labelled, unlabelled=None, batch_size=2):
    """Checks `task` on a labelled batch of targets (and an unlabelled one).

    - the head is float32 and its loss is a finite, non-negative scalar with
      a positive label count and a finite, non-zero gradient;
    - with sample weights 0 (DESIGN.md: the samples are dropped for the
      task), and with `unlabelled` targets where given, the loss and count
      are 0 and no head parameter gets a gradient (a missing label is
      masked, not an error);
    - the metrics are named `<task>_...` and give finite results;
    - `decode` returns a dict of outputs named after the task, batch first;
    - `check_targets` accepts both batches; `error` names the task;
    - the config round-trips through `keras.saving`.
    """
    model = _head_model(task)
    images = np.random.default_rng(0).uniform(0, 255, (batch_size,) + IMAGE_SHAPE)
    images = images.astype("float32")
    y_pred = model(images)
    assert keras.backend.standardize_dtype(y_pred.dtype) == "float32"

    loss, count, grads = _head_gradients(task, model, images, labelled)
    assert np.isfinite(float(loss)) and float(loss) >= 0.0
    assert float(count) > 0
    present = [g for g in grads if g is not None]
    assert present and all(np.all(np.isfinite(ops.convert_to_numpy(g))) for g in present)
    assert any(np.any(ops.convert_to_numpy(g) != 0) for g in present)

    _assert_masked(task, model, images, labelled, np.zeros((batch_size,), "float32"))
    if unlabelled is not None:
        _assert_masked(task, model, images, unlabelled)

    metrics = task.build_metrics()
    assert all(metric.name.startswith(f"{task.name}_") for metric in metrics)
    task.update_metrics(metrics, labelled, y_pred)
    for metric in metrics:
        result = keras.tree.flatten(metric.result())
        assert all(np.all(np.isfinite(ops.convert_to_numpy(r))) for r in result), metric.name

    decoded = task.decode(y_pred)
    assert isinstance(decoded, dict) and decoded
    for name, value in decoded.items():
        assert name.startswith(task.name), name
        assert ops.shape(value)[0] == batch_size, name

    task.check_targets(labelled, IMAGE_SHAPE)
    if unlabelled is not None:
        task.check_targets(unlabelled, IMAGE_SHAPE)
    assert task.name in str(task.error("something is wrong"))

    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(task))
    assert type(restored) is type(task) and restored.get_config() == task.get_config()


@pytest.fixture
def task_contract():
    """`run_task_contract`, for the tests of this folder."""
    return run_task_contract
