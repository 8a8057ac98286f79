"""Every `>>>` example in keras_mtl's docstrings runs and prints what it shows.

Examples that need a trained model, a data set on disk, a GPU, the network or more
than about a second of compute are written as ```python blocks under "Example:"
(illustrations, not run); `>>>` lines are promises that this test keeps. A model an
example builds uses `trunk="micro_resnet", weights=None, input_shape=(32, 32, 3)`.

Each module runs its examples in its own namespace plus these names (`_namespace`):
`keras`, `np`, `tf`, `keras_mtl` (also as `mtl`), `tasks` (`keras_mtl.tasks`) and the
task classes `Classification`, `Detection`, `Segmentation`. Anything else an example
uses it imports or builds itself.
"""

import doctest
import importlib
import pkgutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl
from keras_mtl import tasks
from keras_mtl.tasks import Classification, Detection, Segmentation

# Modules whose examples import optional extras that CI installs; none are skipped.
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.fixture(autouse=True)
def _seed_and_clear():
    """Overrides conftest's fixture: the test clears the Keras session itself, and only
    after a module whose examples ran (a `clear_session` is ~0.15 s of garbage
    collection; about a quarter of the modules have no examples)."""
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("float32")
    yield


def _namespace():
    return {"keras": keras, "np": np, "tf": tf, "keras_mtl": keras_mtl, "mtl": keras_mtl,
            "tasks": tasks, "Classification": Classification, "Detection": Detection,
            "Segmentation": Segmentation}


def _module_names():
    names = [keras_mtl.__name__]
    for info in pkgutil.walk_packages(keras_mtl.__path__, prefix="keras_mtl."):
        names.append(info.name)
    return sorted(names)


def _examples(module):
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [test for test in finder.find(module, module.__name__) if test.examples]


@pytest.mark.parametrize("name", _module_names())
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    module = importlib.import_module(name)
    tests = _examples(module)
    if not tests:
        return
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    try:
        for test in tests:
            test.globs = {**vars(module), **_namespace(), **test.globs}
            runner.run(test)
    finally:
        keras.backend.clear_session()
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} of {results.attempted} examples in {name} fail"
