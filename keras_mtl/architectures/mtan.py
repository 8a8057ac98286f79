"""MTAN: a shared trunk with per-task soft attention at each pyramid level."""

import keras
from keras import layers

from keras_mtl.architectures.architecture import Architecture, SharedParts, check_levels
from keras_mtl.architectures.architecture import keras_serializable
from keras_mtl.trunks.pyramid import LEVELS
from keras_mtl.architectures.head_seeds import build_head


@keras_serializable
class MTAN(Architecture):
    """Multi-Task Attention Network (Liu, Johns, Davison, CVPR 2019).

    One shared trunk; each task owns a light attention module per pyramid
    level that selects its features from the shared ones, and its head reads
    only its attended features. For task t at level l (fine to coarse):

        x = P_l                                      # (B, H_l, W_l, C_l)
        x = concat(P_l, avgpool2(a_t[l-1]))          # from the 2nd level on
        m = sigmoid(BN(conv1x1(ReLU(BN(conv1x1(x))))))   # (B, H_l, W_l, C_l)
        a_t[l] = m * P_l

    The first convolution has `max(8, C_l // reduction)` filters. As in the
    paper, a task's mask at one level also sees its attended features of the
    level before; unlike the paper (which reads an intermediate tensor inside
    each block and passes the previous attended map through a 3x3
    convolution), the masks read the trunk's pyramid outputs and the previous
    map is only pooled, which keeps the cost low (about one 1x1 bottleneck per
    task and level). Levels outside `levels` reach the heads unattended.

    Shared parameters: the trunk's; shared features: its P2..P5 outputs (the
    attention modules and heads are task-specific).

    Args:
        levels: the attended levels, a subset of `("P2", "P3", "P4", "P5")`.
        reduction: channel reduction of the attention bottleneck.

    Example:

    >>> model = keras_mtl.build_mtl(
    ...     [tasks.Classification("c", 2), tasks.Segmentation("s", 3)],
    ...     trunk="micro_resnet", weights=None, input_shape=(32, 32, 3),
    ...     architecture=MTAN(reduction=4))
    >>> len([layer for layer in model.layers if layer.name.endswith("_mask")])  # tasks x levels
    8
    """

    def __init__(self, levels=LEVELS, reduction=4):
        self.levels = check_levels(levels, "MTAN")
        if int(reduction) < 1:
            raise ValueError(f"MTAN: reduction must be >= 1, got {reduction}.")
        self.reduction = int(reduction)

    def build(self, images, trunk, tasks, image_shape):
        features = trunk(images)  # {"P2": (B, H/4, W/4, C2), ..., "P5": (B, H/32, W/32, C5)}
        outputs = {}
        for task in tasks:
            attended, previous = dict(features), None
            for level in LEVELS:
                if level not in self.levels:
                    previous = None
                    continue
                attended[level] = self._attend(task.name, level, features[level], previous)
                previous = attended[level]
            outputs[task.name] = build_head(task, attended, image_shape)
        return outputs, SharedParts([trunk], keras.tree.flatten(features))

    def _attend(self, task_name, level, shared, previous):
        prefix = f"{task_name}_mtan_{level}"
        channels = shared.shape[-1]
        x = shared  # (B, H_l, W_l, C_l)
        if previous is not None:
            pooled = layers.AveragePooling2D(2, name=f"{prefix}_pool")(previous)  # C_{l-1} chans
            x = layers.Concatenate(name=f"{prefix}_concat")([shared, pooled])
        x = layers.Conv2D(max(8, channels // self.reduction), 1, use_bias=False,
                          name=f"{prefix}_conv1")(x)
        x = layers.BatchNormalization(name=f"{prefix}_bn1")(x)
        x = layers.ReLU(name=f"{prefix}_relu")(x)
        x = layers.Conv2D(channels, 1, use_bias=False, name=f"{prefix}_conv2")(x)
        x = layers.BatchNormalization(name=f"{prefix}_bn2")(x)
        mask = layers.Activation("sigmoid", name=f"{prefix}_mask")(x)  # (B, H_l, W_l, C_l)
        return layers.Multiply(name=f"{prefix}_attended")([mask, shared])

    def get_config(self):
        return {"levels": list(self.levels), "reduction": self.reduction}
