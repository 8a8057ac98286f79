"""Hard parameter sharing: one trunk, one head per task."""

import keras

from keras_mtl.architectures.architecture import Architecture, SharedParts, keras_serializable
from keras_mtl.architectures.head_seeds import build_head


@keras_serializable
class HardParameterSharing(Architecture):
    """One shared trunk; every task's head reads the same pyramid features.

    The classic multi-task network (Caruana, "Multitask Learning", Machine
    Learning 1997): `outputs = {task: head(trunk(images))}`. The cheapest
    architecture, and the default of `build_mtl`. Shared parameters: the
    trunk's; shared features: its outputs P2..P5.

    Example:

    >>> model = keras_mtl.build_mtl(
    ...     [tasks.Classification("c", 2), tasks.Segmentation("s", 3)],
    ...     trunk="micro_resnet", weights=None, input_shape=(32, 32, 3),
    ...     architecture="hps")
    >>> [layer.name for layer in model.layers if layer.name.startswith("trunk")]
    ['trunk_micro_resnet']
    """

    def build(self, images, trunk, tasks, image_shape):
        features = trunk(images)  # {"P2": (B, H/4, W/4, C2), ..., "P5": (B, H/32, W/32, C5)}
        outputs = {task.name: build_head(task, features, image_shape) for task in tasks}
        return outputs, SharedParts([trunk], keras.tree.flatten(features))
