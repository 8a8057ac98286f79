"""keras_mtl: one Keras model, several vision tasks.

Example:

>>> import keras_mtl as mtl
>>> model = mtl.build_mtl(
...     [mtl.tasks.Classification("label", 3), mtl.tasks.Segmentation("mask", 4)],
...     trunk="micro_resnet", weights=None, input_shape=(32, 32, 3),
...     weighting="uncertainty")
>>> model.task_names
['label', 'mask']

Training it (an epoch on the synthetic shapes data):

```python
model.compile(optimizer="adam", jit_compile=True)
model.fit(mtl.data.shapes.make_dataset(256, image_size=32, tasks=["label", "mask"]),
          epochs=1)
```

`import keras_mtl` imports TensorFlow (quietly, see `keras_mtl.quiet`) and
every submodule, which registers the Keras classes `keras.models.load_model`
needs. Only the `keras-mtl` command defers that until it has parsed its
options, so that `keras-mtl --help` prints at once and `keras-mtl --verbose`
can bring TensorFlow's start-up lines back; an attribute of the package
read meanwhile completes the import.
"""

__version__ = "0.1.0"

import importlib as _importlib
import os as _os
import re as _re
import sys as _sys

from keras_mtl.quiet import quiet_tensorflow  # no TensorFlow yet

_SUBMODULES = ("architectures", "callbacks", "data", "distribute", "evaluation", "plotting",
               "tasks", "training", "trunks", "weighting")
__all__ = ["MultiTaskModel", "build_mtl", "build_single_task", *_SUBMODULES]
_importing = False


def _started_by_the_command():
    """Whether this process is the `keras-mtl` command (script or `python -m keras_mtl.cli`).

    The command calls `_import_all()` itself once its options are parsed.
    """
    script = _os.path.basename(getattr(_sys, "argv", [""])[0] or "")
    if _re.sub(r"(-script\.pyw?|\.exe)$", "", script) == "keras-mtl":
        return True
    argv = getattr(_sys, "orig_argv", [])
    return any(flag == "-m" and module == "keras_mtl.cli"
               for flag, module in zip(argv, argv[1:]))


def _import_all():
    """Imports TensorFlow without its C++ start-up lines, then every submodule.

    Idempotent; `import keras_mtl` calls it, except in the `keras-mtl`
    command, which calls it after parsing its options.
    """
    global MultiTaskModel, build_mtl, build_single_task, _importing
    if _importing:
        return
    _importing = True
    try:
        quiet_tensorflow()  # first: before anything imports TensorFlow
        for name in _SUBMODULES:
            _importlib.import_module(f"{__name__}.{name}")
        from keras_mtl.builders import build_mtl, build_single_task
        from keras_mtl.model import MultiTaskModel
    finally:
        _importing = False


def __getattr__(name):
    """Completes a deferred import (the `keras-mtl` command) when a public name is read."""
    if name in __all__ and not _importing:
        _import_all()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if not _started_by_the_command():
    _import_all()
