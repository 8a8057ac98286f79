"""Task weightings: how the per-task losses or gradients become one update.

`get(identifier)` accepts a registered name (`names()` lists them), a
`{task: weight}` dict (static weights), a `{"class_name", "config"}` dict,
a class, or an instance.

Example:

>>> keras_mtl.weighting.get("uncertainty")
<UncertaintyWeighting ...>
>>> keras_mtl.weighting.get({"species": 1.0, "trimap": 0.5})
<StaticWeighting ...>
"""

from keras_mtl.registry import Registry
from keras_mtl.weighting.equal import EqualWeighting
from keras_mtl.weighting.static import StaticWeighting
from keras_mtl.weighting.uncertainty import UncertaintyWeighting
from keras_mtl.weighting.weighting import GradientWeighting, LossWeighting, Weighting

WEIGHTINGS = Registry("weighting", base=Weighting)
WEIGHTINGS.register("equal")(EqualWeighting)
WEIGHTINGS.register("static")(StaticWeighting)
WEIGHTINGS.register("uncertainty")(UncertaintyWeighting)


def names():
    """Registered weighting names."""
    return WEIGHTINGS.names()


def get(identifier, **kwargs):
    """Returns a `Weighting` for `identifier` (see the module docstring)."""
    if isinstance(identifier, dict) and "class_name" not in identifier:
        return StaticWeighting(identifier)
    return WEIGHTINGS.get(identifier, **kwargs)


__all__ = [
    "EqualWeighting", "GradientWeighting", "LossWeighting", "StaticWeighting",
    "UncertaintyWeighting", "WEIGHTINGS", "Weighting", "get", "names",
]
