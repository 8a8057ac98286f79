"""A small name -> factory registry with a Keras-style `get`."""

import inspect

import keras

# Registers a class under the "keras_mtl" package for `.keras` files (tasks, weightings,
# architectures, the model).
keras_serializable = keras.saving.register_keras_serializable(package="keras_mtl")


class Configurable:
    """`from_config` and `__repr__` for a plain object built from its `get_config()`.

    Tasks and architectures are not Keras layers, but they are saved in a
    model's config like layers: `get_config()` returns the constructor's
    keyword arguments and `from_config(config)` calls the constructor.

    Example:

    >>> class Head(Configurable):
    ...     def __init__(self, units=8):
    ...         self.units = units
    ...     def get_config(self):
    ...         return {"units": self.units}
    >>> Head.from_config({"units": 4})
    Head(units=4)
    """

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Registry:
    """Maps names to classes or factory functions.

    `get` accepts what `keras.optimizers.get` accepts: a registered name, a
    `{"class_name": ..., "config": {...}}` dict, a registered class (called
    with no arguments) or an instance of the registry's `base` (returned as
    is). An unknown name raises a `ValueError` that lists the valid names.

    Args:
        kind: what the registry holds, used in error messages (`"trunk"`).
        base: optional class that every instance handed to `get` must be.

    Example:

    >>> colours = Registry("colour")
    >>> @colours.register("red")
    ... def make_red():
    ...     return (255, 0, 0)
    >>> colours.get("red")
    (255, 0, 0)
    >>> colours.names()
    ['red']
    """

    def __init__(self, kind, base=None):
        self.kind = kind
        self.base = base
        self._entries = {}

    def register(self, name):
        """Decorator that registers a class or function under `name`."""

        def decorator(obj):
            if name in self._entries:
                raise ValueError(f"A {self.kind} named '{name}' is already registered.")
            self._entries[name] = obj
            return obj

        return decorator

    def names(self):
        """Sorted list of the registered names."""
        return sorted(self._entries)

    def lookup(self, name):
        """The class or factory registered under `name`."""
        if name not in self._entries:
            raise ValueError(
                f"Unknown {self.kind} '{name}'. Valid names: {', '.join(self.names())}."
            )
        return self._entries[name]

    def get(self, identifier, **kwargs):
        """Builds (or passes through) the object that `identifier` names.

        Args:
            identifier: a name, a `{"class_name", "config"}` dict, a
                registered class, or an instance of `base`.
            **kwargs: extra keyword arguments for the factory when
                `identifier` is a name or a class.

        Returns:
            The built object.

        Raises:
            ValueError: for an unknown name or a malformed dict.
            TypeError: for anything else.
        """
        if self.base is not None and isinstance(identifier, self.base):
            return identifier
        if isinstance(identifier, str):
            return self.lookup(identifier)(**kwargs)
        if isinstance(identifier, dict):
            if "class_name" not in identifier:
                raise ValueError(
                    f"A {self.kind} dict needs a 'class_name' key, got keys {sorted(identifier)}."
                )
            config = dict(identifier.get("config", {}))
            config.update(kwargs)
            return self._from_class_name(identifier["class_name"], config)
        if inspect.isclass(identifier) and (
            identifier in self._entries.values()
            or (self.base is not None and issubclass(identifier, self.base))
        ):
            return identifier(**kwargs)
        raise TypeError(
            f"Cannot interpret {identifier!r} as a {self.kind}. Pass one of: "
            f"{', '.join(self.names())}, a config dict, or an instance."
        )

    def _from_class_name(self, class_name, config):
        if class_name in self._entries:
            return self._entries[class_name](**config)
        for entry in self._entries.values():
            if inspect.isclass(entry) and entry.__name__ == class_name:
                if hasattr(entry, "from_config"):
                    return entry.from_config(config)
                return entry(**config)
        raise ValueError(
            f"Unknown {self.kind} class '{class_name}'. Valid names: {', '.join(self.names())}."
        )
