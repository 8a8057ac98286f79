"""Task normalisation: one trunk's convolutions shared, its normalisation layers one set per task."""

import keras

from keras_mtl.architectures.architecture import Architecture, SharedParts, keras_serializable
from keras_mtl.architectures.head_seeds import build_head

NORMALIZATION_LAYERS = (keras.layers.BatchNormalization, keras.layers.LayerNormalization,
                        keras.layers.GroupNormalization)


def task_normalized_trunk(trunk, name):
    """A trunk that reuses `trunk`'s layers except its normalisation layers, which are copies.

    `keras.models.clone_model` rebuilds the trunk (nested models included)
    around the same convolution, dense and other layers, so their variables
    are shared; every normalisation layer (BatchNorm, LayerNorm, GroupNorm)
    is replaced by a new one with the same config, starting from the
    original's weights (scale, offset and, for BatchNorm, moving statistics).

    Args:
        trunk: the trunk `keras.Model`.
        name: the copy's name (unique in the multi-task model's graph).

    Returns:
        `(model, copies)`: the new trunk and its new normalisation layers.

    Example:

    >>> trunk = keras_mtl.trunks.get("micro_resnet", input_shape=(32, 32, 3))
    >>> copy, norms = task_normalized_trunk(trunk, "trunk_task_b")
    >>> shared = {id(v) for v in trunk.weights} & {id(v) for v in copy.weights}
    >>> len(shared) == len(trunk.weights) - sum(len(layer.weights) for layer in norms)
    True
    """
    pairs = []  # (original, copy)

    def copy_normalization(layer):
        if not isinstance(layer, NORMALIZATION_LAYERS):
            return layer  # the same layer: its variables are shared
        config = {**layer.get_config(), "name": f"{name}_{layer.name}"}
        copy = layer.__class__.from_config(config)
        pairs.append((layer, copy))
        return copy

    model = keras.models.clone_model(trunk, clone_function=copy_normalization, recursive=True)
    model.name = name
    for original, copy in pairs:
        copy.set_weights(original.get_weights())
        copy.trainable = original.trainable
    return model, [copy for _, copy in pairs]


@keras_serializable
class TaskNormalization(Architecture):
    """Every task runs the shared trunk with normalisation layers of its own.

    The convolutions (and every other weighted layer) of the trunk are
    shared; each normalisation layer (BatchNorm, LayerNorm, GroupNorm) has
    one copy per task: its own scale and offset, and for BatchNorm its own
    batch and moving statistics. A task can so rescale, shift or switch off
    any channel of the shared filters at every depth, for a few parameters
    per channel, while the filters are learnt from every task. The first
    task uses the trunk itself; the others use `task_normalized_trunk`
    copies, which start from the trunk's weights.

    This is the domain-specific normalisation of Bilen and Vedaldi
    ("Universal representations: The missing link between faces, text,
    planktons, and cat breeds", arXiv:1701.07275, 2017: shared filters,
    one set of normalisation scales, offsets and statistics per domain),
    applied here to several tasks on the same images.

    Cost: each task runs the whole trunk (T forward passes, and T backward
    passes for a gradient-based weighting), like `separate`, with the
    parameters of one trunk plus T sets of normalisation layers. There is
    no shared feature tensor, so a `rep_grad` weighting balances the
    gradients of the shared parameters instead (the train step warns once).

    Shared parameters: the trunk's layers other than its normalisation
    layers. Shared features: none.

    Example:

    >>> model = keras_mtl.build_mtl(
    ...     [keras_mtl.tasks.Classification("c", 2), keras_mtl.tasks.Segmentation("s", 3)],
    ...     trunk="micro_resnet", weights=None, input_shape=(32, 32, 3),
    ...     architecture="task_norm")
    >>> sorted(layer.name for layer in model.layers if layer.name.startswith("trunk"))
    ['trunk_micro_resnet', 'trunk_micro_resnet_s']
    >>> trunk = model.get_layer("trunk_micro_resnet")
    >>> len(model.shared_variables) < len(trunk.trainable_variables)
    True
    """

    def build(self, images, trunk, tasks, image_shape):
        outputs = {}
        for index, task in enumerate(tasks):
            column = trunk if index == 0 else task_normalized_trunk(
                trunk, f"{trunk.name}_{task.name}")[0]
            features = column(images)  # {"P2": (B, H/4, W/4, C2), ..., "P5": (B, H/32, ...)}
            outputs[task.name] = build_head(task, features, image_shape)
        shared = [layer for layer in _weighted_layers(trunk)
                  if not isinstance(layer, NORMALIZATION_LAYERS)]
        return outputs, SharedParts(shared)

    def get_config(self):
        return {}


def _weighted_layers(model):
    """The leaf layers of `model` (nested models opened) that own variables, in order."""
    leaves = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            leaves.extend(_weighted_layers(layer))
        elif layer.weights:
            leaves.append(layer)
    return leaves
