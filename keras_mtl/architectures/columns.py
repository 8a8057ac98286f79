"""Trunk columns: copies of a trunk, and a trunk cut into its pyramid stages.

Used by the architectures that give every task its own trunk
(`cross_stitch`, `separate`).
"""

import keras

from keras_mtl import compat
from keras_mtl.trunks.pyramid import LEVELS


def clone_trunk(trunk, name):
    """A copy of `trunk` with its own variables, starting from its weights.

    `keras.models.clone_model` rebuilds the Functional trunk (nested models
    included) with new layers; the weights (BatchNorm statistics too) are
    then copied, so a pretrained trunk gives columns that start equal.

    Args:
        trunk: the trunk `keras.Model`.
        name: the copy's name (unique in the multi-task model's graph).

    Returns:
        The cloned `keras.Model`, frozen if `trunk` is.

    Example:

    >>> trunk = keras_mtl.trunks.get("micro_resnet", input_shape=(32, 32, 3))
    >>> column = clone_trunk(trunk, "trunk_copy")
    >>> len(column.weights) == len(trunk.weights)
    True
    """
    column = keras.models.clone_model(trunk)
    column.name = name
    column.set_weights(trunk.get_weights())
    if not trunk.trainable:
        column.trainable = False
    return column


def _single_producer(tensors):
    """The `(model, node_index)` producing every tensor of `tensors`, if one
    Functional model call with a P2..P5 dict output does."""
    calls = [compat.producer(tensor) for tensor in tensors]
    producers = {(id(operation), node_index) for operation, node_index in calls}
    operation, node_index = calls[0]
    if (len(producers) == 1 and isinstance(operation, keras.Model)
            and isinstance(operation.output, dict) and set(operation.output) >= set(LEVELS)):
        return operation, node_index
    return None, None


def split_stages(trunk, name=None):
    """Cuts a pyramid trunk into four stage models sharing its layers.

    Returns `{"P2": images -> P2, "P3": P2 -> P3, "P4": P3 -> P4,
    "P5": P4 -> P5}`: chained, they compute the trunk (same layers, same
    variables, no copy). Works when each level depends on the images only
    through the previous level, as in the ResNet v1, VGG and small ResNet
    trunks; the trunks built by `keras_mtl.trunks.build_pyramid_trunk` (a
    preprocessing layer, then a nested feature model) are opened up.

    Args:
        trunk: a trunk `keras.Model`, raw pixels -> `{"P2", ..., "P5"}`.
        name: prefix of the stage models' names (default `trunk.name`).

    Returns:
        dict of four Functional `keras.Model`.

    Raises:
        ValueError: if a level depends on more than the previous one (e.g.
            ResNet v2, whose stride-32 block also reads an earlier tensor).
    """
    name = name or trunk.name
    if not (isinstance(trunk.output, dict) and set(trunk.output) >= set(LEVELS)):
        raise ValueError(f"Trunk '{trunk.name}' does not return a dict of {LEVELS}.")
    tensors = [trunk.output[level] for level in LEVELS]
    inner, node_index = _single_producer(tensors)
    if inner is not None:  # opened: trunk = prefix layers, then one nested feature model
        stages = split_stages(inner, name=f"{name}_inner")
        inner_input = compat.node_input_tensors(inner, node_index)[0]  # in trunk's graph
        images = keras.Input(shape=trunk.inputs[0].shape[1:], dtype=trunk.inputs[0].dtype,
                             name=f"{name}_images")
        x = images
        if inner_input is not trunk.inputs[0]:
            prefix = keras.Model(trunk.inputs[0], inner_input, name=f"{name}_prefix")
            x = prefix(x)
        first = keras.Model(images, stages["P2"](x), name=f"{name}_P2")
        return {"P2": first, **{level: stages[level] for level in LEVELS[1:]}}
    stages, previous = {}, trunk.inputs[0]
    for level, tensor in zip(LEVELS, tensors):
        try:
            stages[level] = keras.Model(previous, tensor, name=f"{name}_{level}")
        except ValueError as error:
            raise ValueError(
                f"Cannot cut trunk '{trunk.name}' into stages at {level}: it depends on more "
                f"than the previous level ({error})."
            ) from error
        previous = tensor
    return stages
