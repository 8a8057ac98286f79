"""Separate: one independent trunk per task, the single-task baseline."""

from keras_mtl.architectures.architecture import Architecture, SharedParts, keras_serializable
from keras_mtl.architectures.columns import clone_trunk
from keras_mtl.architectures.head_seeds import build_head


@keras_serializable
class Separate(Architecture):
    """One trunk per task, nothing shared: T single-task models in one.

    Behind the `MultiTaskModel` API (one `fit`, one `predict`, one export),
    each task gets its own copy of the trunk (the first task the given trunk,
    the others `clone_trunk` copies that start from its weights) and its own
    head; the tasks only share the input batch. It is the single-task
    baseline of delta-m, trained with the same budget, data and step, and
    costs T trunks in parameters and compute.

    Weightings: a loss weight only scales its task's own gradients. Nothing
    is shared, so a gradient-based weighting has nothing to balance: every
    parameter gets its own task's gradient (the plain sum; the train step
    warns once); its logged weights stay at 1.

    Example:

    >>> model = keras_mtl.build_mtl(
    ...     [tasks.Classification("c", 2), tasks.Segmentation("s", 3)],
    ...     trunk="micro_resnet", weights=None, input_shape=(32, 32, 3),
    ...     architecture="separate")
    >>> sorted(layer.name for layer in model.layers if layer.name.startswith("trunk"))
    ['trunk_micro_resnet', 'trunk_micro_resnet_s']
    """

    def build(self, images, trunk, tasks, image_shape):
        outputs = {}
        for index, task in enumerate(tasks):
            column = trunk if index == 0 else clone_trunk(trunk, f"{trunk.name}_{task.name}")
            outputs[task.name] = build_head(task, column(images), image_shape)
        return outputs, SharedParts()
