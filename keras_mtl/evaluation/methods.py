"""`Method`: one multi-task recipe of a leaderboard (a weighting and an architecture).

A method is written as a string, `NAME[:OPTION,OPTION...][@ARCHITECTURE[:OPTION,...]]`:

- `"famo"`: a registered weighting (`keras_mtl.weighting.names()`) on hard
  parameter sharing;
- `"imtl:rep_grad"`: a gradient method on the shared features;
- `"famo:learning_rate=0.01"`: keyword arguments of the weighting (`true`,
  `false` and `none` are Python's `True`, `False` and `None`);
- `"static:person=8"`: static task weights (tasks not named get 1);
- `"equal@mtan"`: another architecture (`keras_mtl.architectures.names()`);
- `"calibrated@branched:branch_at=P5,private=person"`: keyword arguments of
  the architecture, written like the weighting's;
- `"calibrated:trunk_lr=1.73"`: the reserved option `trunk_lr` is not a
  weighting argument but the factor of the shared trunk's learning rate
  over the heads' (`keras_mtl.training.trunk_learning_rate`; default 1).

Example:

>>> method = parse_method("imtl:rep_grad@mtan")
>>> method.label, method.weighting, method.options, method.architecture
('imtl:rep_grad@mtan', 'imtl', {'rep_grad': True}, 'mtan')
>>> parse_method("calibrated:trunk_lr=2").trunk_lr
2.0
>>> parse_method("equal@branched:branch_at=P5").architecture_options
{'branch_at': 'P5'}
"""

import dataclasses

from keras_mtl import architectures, weighting as weighting_lib


TRUNK_LR_OPTION = "trunk_lr"  # a method option that is not the weighting's


def _parse_value(text):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@dataclasses.dataclass(frozen=True)
class Method:
    """A weighting (name and options) and an architecture, with a label.

    Args:
        label: the name in tables and the results file (unique in a sweep).
        weighting: a registered weighting name, or a `Weighting` instance
            (its config is copied for each run, so runs never share state).
        options: keyword arguments of the weighting (for `"static"`: the
            task weights).
        architecture: a registered architecture name.
        architecture_options: keyword arguments of the architecture.
        trunk_lr: the trunk's learning rate as a multiple of the heads'
            (float > 0; 1 = one optimizer for all).
    """

    label: str
    weighting: object = "equal"
    options: dict = dataclasses.field(default_factory=dict)
    architecture: str = "hps"
    trunk_lr: float = 1.0
    architecture_options: dict = dataclasses.field(default_factory=dict)

    def build_weighting(self, task_names):
        """A fresh `Weighting` for a model with tasks `task_names`."""
        if isinstance(self.weighting, weighting_lib.Weighting):
            return type(self.weighting).from_config(self.weighting.get_config())
        if self.weighting == "static":
            unknown = sorted(set(self.options) - set(task_names))
            if unknown:
                raise ValueError(f"Method '{self.label}': static weights name unknown task(s) "
                                 f"{unknown}; the tasks are {list(task_names)}.")
            weights = {name: 1.0 for name in task_names}
            weights.update({name: float(value) for name, value in self.options.items()})
            return weighting_lib.get(weights)
        return weighting_lib.get(self.weighting, **self.options)

    def build_architecture(self):
        """A fresh `Architecture` (its name and options)."""
        return architectures.get(self.architecture, **self.architecture_options)

    def check(self, task_names):
        """Raises a `ValueError` naming this method if it cannot be built."""
        try:
            if not float(self.trunk_lr) > 0:
                raise ValueError(f"trunk_lr must be > 0, got {self.trunk_lr!r}")
            self.build_weighting(task_names)
            self.build_architecture()  # an unknown name: the registry lists the valid ones
        except (ValueError, TypeError) as error:
            raise ValueError(f"Method '{self.label}' is not usable: {error}") from error


def parse_method(spec):
    """A `Method` from a string (see the module docstring), a dict or a `Method`.

    Args:
        spec: `"NAME[:OPTION,...][@ARCHITECTURE[:OPTION,...]]"`, a `Method`, a
            `Weighting` instance, or a dict of `Method` fields.

    Returns:
        A `Method`.
    """
    if isinstance(spec, Method):
        return spec
    if isinstance(spec, weighting_lib.Weighting):
        return Method(label=spec.name, weighting=spec)
    if isinstance(spec, dict):
        return Method(**spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"A method must be a non-empty string like 'famo' or "
                         f"'imtl:rep_grad@mtan', a dict or a Method; got {spec!r}.")
    label = spec.strip()
    body, _, architecture_text = label.partition("@")
    name, options = _name_and_options(body)
    architecture, architecture_options = _name_and_options(architecture_text)
    trunk_lr = options.pop(TRUNK_LR_OPTION, 1.0)
    if isinstance(trunk_lr, bool) or not isinstance(trunk_lr, (int, float)):
        raise ValueError(f"Method '{label}': {TRUNK_LR_OPTION} must be a number (the trunk's "
                         f"learning rate over the heads'), got {trunk_lr!r}.")
    return Method(label=label, weighting=name, options=options, architecture=architecture or "hps",
                  trunk_lr=float(trunk_lr), architecture_options=architecture_options)


def _name_and_options(text):
    """`"NAME:KEY=VALUE,FLAG"` -> `("NAME", {"KEY": value, "FLAG": True})`."""
    name, _, option_text = text.partition(":")
    options = {}
    for item in filter(None, (part.strip() for part in option_text.split(","))):
        key, equals, value = item.partition("=")
        options[key.strip()] = _parse_value(value.strip()) if equals else True
    return name.strip(), options
