"""The public namespace of `import keras_mtl as mtl`."""

import importlib

import keras_mtl as mtl


def test_public_modules_are_attributes_of_the_package():
    for name in mtl.__all__:
        assert getattr(mtl, name) is not None, name
    assert mtl.distribute is importlib.import_module("keras_mtl.distribute")
    assert "distribute" in mtl.__all__
    assert mtl.distribute.make_strategy("default").num_replicas_in_sync == 1
