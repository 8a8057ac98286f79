"""The architecture base class and `SharedParts`, what its tasks share."""

import keras

from keras_mtl.registry import Configurable, keras_serializable  # noqa: F401 (re-exported)
from keras_mtl.trunks.pyramid import LEVELS


class SharedParts:
    """What the tasks of a built architecture share, for gradient-based weightings.

    A gradient-based weighting (`keras_mtl.training.steps.gradient_balanced_step`) balances the
    per-task gradients of the *shared parameters* (every task's loss reaches
    them) or, with `rep_grad=True`, of the *shared features* (a cut of the
    graph: every task's output depends on the images only through these
    tensors, and everything between them and the outputs is either one
    task's own or summed plainly). The other parameters get the plain sum of
    the per-task gradients (each task's own head: its own gradient).

    Args:
        layers: layers or models whose trainable variables are the shared
            parameters; empty when nothing is shared (`separate`).
        features: symbolic tensors of the model's graph, the shared features;
            empty when the architecture has no such cut (then `rep_grad`
            falls back to the parameter gradients).

    Example:

    >>> trunk = keras_mtl.trunks.get("micro_resnet", input_shape=(32, 32, 3))
    >>> parts = SharedParts([trunk], keras.tree.flatten(trunk.output))
    >>> parts.variables() == trunk.trainable_variables
    True
    """

    def __init__(self, layers=(), features=()):
        self.layers = list(layers)
        self.features = list(features)

    def variables(self):
        """The shared trainable variables, without duplicates, in layer order."""
        seen, out = set(), []
        for layer in self.layers:
            for variable in layer.trainable_variables:
                if id(variable) not in seen:
                    seen.add(id(variable))
                    out.append(variable)
        return out

    def __repr__(self):
        names = [layer.name for layer in self.layers]
        return f"SharedParts(layers={names}, features={len(self.features)} tensors)"


class Architecture(Configurable):
    """Base class of an architecture: how a trunk and the task heads are wired.

    An architecture is a recipe, not a layer (like a `Task`): the
    `MultiTaskModel` calls `build` once inside its Functional graph, so the
    model saves, reloads and exports like any Functional Keras model. The
    architecture's config (`get_config`) is stored in the model's config and
    `build` is called again on reload, so it must be deterministic: same
    layers, same names, same order.

    Subclasses implement `build` and list their constructor arguments in
    `get_config`; they are registered in `keras_mtl.architectures` and with
    `keras.saving.register_keras_serializable(package="keras_mtl")`.
    """

    def build(self, images, trunk, tasks, image_shape):
        """Wires trunk(s), task-specific modules and heads on `images`.

        Args:
            images: the model's input `KerasTensor` `(B, H, W, 3)`.
            trunk: the trunk `keras.Model`, raw pixels -> `{"P2", ..., "P5"}`.
                Architectures that need one trunk per task use it for the
                first task and clones (`clone_trunk`) for the others.
            tasks: list of `Task`, distinct names.
            image_shape: `(H, W, 3)`.

        Returns:
            `(outputs, shared)`: `{task.name: raw output tensor}` and a
            `SharedParts`.
        """
        raise NotImplementedError


def check_levels(levels, owner):
    """Returns `levels` as a tuple in pyramid order; raises on unknown ones."""
    levels = tuple(levels)
    unknown = [level for level in levels if level not in LEVELS]
    if unknown or not levels:
        raise ValueError(f"{owner}: levels must be a non-empty subset of {LEVELS}, got {levels}.")
    return tuple(level for level in LEVELS if level in levels)

