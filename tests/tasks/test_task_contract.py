"""Every built-in task keeps the task contract (`task_contract.run_task_contract`)."""

import numpy as np
import pytest

from keras_mtl import tasks
from keras_mtl.data import shapes

IMAGE_SIZE = 32  # the contract builds heads on a 32 px micro trunk
TASKS = {task.name: task for task in shapes.make_tasks()}


def _batch():
    data = shapes.make_dataset(2, image_size=IMAGE_SIZE, batch_size=2)
    _, targets = next(iter(data))
    return {name: value for name, value in targets.items()}


def _unlabelled(name, target):
    """The batch with every label missing; None for detection, where an image without
    boxes is a labelled negative (a missing label is a sample weight of 0)."""
    if name == "objects":
        return None
    if name == "mask":
        return np.full_like(target, 255)
    return -np.ones_like(target)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_built_in_task_keeps_the_contract(name, task_contract):
    target = _batch()[name]
    task_contract(TASKS[name], target, _unlabelled(name, target))


def test_multi_label_classification_keeps_the_contract(task_contract):
    task = tasks.Classification("attributes", num_classes=3, multi_label=True)
    labelled = np.array([[1, 0, 1], [0, 1, -1]], "int32")
    task_contract(task, labelled, -np.ones_like(labelled))
