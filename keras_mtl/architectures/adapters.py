"""Residual adapters: small task-specific bottlenecks on a frozen or shared trunk."""

import keras
from keras import layers

from keras_mtl.architectures.architecture import Architecture, SharedParts, check_levels
from keras_mtl.architectures.architecture import keras_serializable
from keras_mtl.trunks.pyramid import LEVELS
from keras_mtl.architectures.head_seeds import build_head


@keras_serializable
class ResidualAdapters(Architecture):
    """Per-task residual bottleneck adapters on each pyramid level of a trunk.

    For cheap fine-tuning of many tasks on one (pretrained, usually frozen)
    trunk: each task adapts the shared features with a few parameters of its
    own, then its head reads them. For task t at level l:

        a_t[l] = P_l + conv1x1_up(ReLU(conv1x1_down(P_l)))

    a bottleneck of `max(4, C_l // reduction)` channels (Houlsby et al.,
    "Parameter-Efficient Transfer Learning for NLP", ICML 2019; residual
    adapters for vision: Rebuffi, Bilen, Vedaldi, NeurIPS 2017) whose up
    projection starts at zero, so each task starts from the trunk's
    features. Simplification: the adapters sit on the trunk's pyramid
    outputs, not inside every residual block as in Rebuffi et al., so one
    trunk pass serves every task (an adapter inside the trunk would need one
    trunk pass per task); a task's adapter at P2 does not change what the
    trunk computes at P3.

    With `freeze_trunk=True` (default) `build` freezes the trunk (its
    BatchNorm then runs in inference mode); only adapters and heads train.
    Parameters per task: about `2 * sum_l C_l^2 / reduction` plus the head.
    Shared parameters: the trunk's trainable ones (none when frozen, so
    gradient-based weightings have nothing to balance); shared features: the
    trunk's P2..P5.

    Args:
        reduction: channel reduction of the bottleneck.
        levels: the adapted levels, a subset of `("P2", "P3", "P4", "P5")`.
        freeze_trunk: freeze the trunk when the model is built.

    Example:

    >>> model = keras_mtl.build_mtl(
    ...     [tasks.Classification("c", 2), tasks.Segmentation("s", 3)],
    ...     trunk="micro_resnet", weights=None, input_shape=(32, 32, 3),
    ...     architecture="adapters")
    >>> model.trunk.trainable
    False
    """

    def __init__(self, reduction=4, levels=LEVELS, freeze_trunk=True):
        if int(reduction) < 1:
            raise ValueError(f"ResidualAdapters: reduction must be >= 1, got {reduction}.")
        self.reduction = int(reduction)
        self.levels = check_levels(levels, "ResidualAdapters")
        self.freeze_trunk = bool(freeze_trunk)

    def build(self, images, trunk, tasks, image_shape):
        if self.freeze_trunk:
            trunk.trainable = False
        features = trunk(images)  # {"P2": (B, H/4, W/4, C2), ..., "P5": (B, H/32, W/32, C5)}
        outputs = {}
        for task in tasks:
            adapted = dict(features)
            for level in self.levels:
                adapted[level] = self._adapter(f"{task.name}_adapter_{level}", features[level])
            outputs[task.name] = build_head(task, adapted, image_shape)
        return outputs, SharedParts([trunk], keras.tree.flatten(features))

    def _adapter(self, prefix, shared):
        channels = shared.shape[-1]
        x = layers.Conv2D(max(4, channels // self.reduction), 1, name=f"{prefix}_down")(shared)
        x = layers.ReLU(name=f"{prefix}_relu")(x)
        x = layers.Conv2D(channels, 1, kernel_initializer="zeros",
                          name=f"{prefix}_up")(x)  # (B, H_l, W_l, C_l), 0 at the start
        return layers.Add(name=f"{prefix}_add")([shared, x])

    def get_config(self):
        return {"reduction": self.reduction, "levels": list(self.levels),
                "freeze_trunk": self.freeze_trunk}
