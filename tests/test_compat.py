"""The private Keras/TensorFlow names of `keras_mtl.compat` still exist and behave.

If one of these fails after a Keras or TensorFlow upgrade, fix `keras_mtl/compat.py`
(only there) and then raise the Keras pin in pyproject.toml.
"""

import pathlib
import re

import keras
import pytest
import tensorflow as tf

from keras_mtl import compat


def _small_model():
    inputs = keras.Input((4,))
    inner_inputs = keras.Input((4,))
    inner = keras.Model(inner_inputs, keras.layers.BatchNormalization()(
        keras.layers.Dense(3)(inner_inputs)), name="inner")
    hidden = keras.layers.Dense(4, name="prefix")(inputs)
    return keras.Model(inputs, inner(hidden), name="outer"), inner, hidden


def test_installed_keras_is_a_checked_version_and_the_pin_matches():
    assert compat.keras_minor_version() in compat.CHECKED_KERAS
    pyproject = (pathlib.Path(__file__).parents[1] / "pyproject.toml").read_text()
    pin = re.search(r'"keras>=([\d.]+),<([\d.]+)"', pyproject)
    assert pin, "pyproject.toml must pin keras below the next minor release"
    upper = tuple(int(p) for p in pin.group(2).split("."))
    for checked in compat.CHECKED_KERAS:
        assert tuple(int(p) for p in checked.split(".")) < upper


def test_all_sublayers_finds_nested_layers():
    model, inner, _ = _small_model()
    names = [layer.name for layer in compat.all_sublayers(model)]
    assert "prefix" in names and "inner" in names
    assert any(isinstance(layer, keras.layers.BatchNormalization)
               for layer in compat.all_sublayers(model))  # inside the nested model
    assert model not in compat.all_sublayers(model)


def test_producer_and_node_inputs_name_the_call():
    model, inner, hidden = _small_model()
    operation, node_index = compat.producer(model.output)
    assert operation is inner
    assert compat.node_input_tensors(operation, node_index)[0] is hidden


def test_merge_call_helpers_run_an_update():
    variable = tf.Variable(1.0)
    assert compat.strategy_supports_no_merge_call() in (True, False)

    def update(strategy, value):
        variable.assign(value)

    compat.maybe_merge_call(update, tf.distribute.get_strategy(), 3.0)
    assert float(variable.numpy()) == 3.0


def test_adding_state_after_build_then_locks_again():
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    with pytest.raises(ValueError):
        layer.add_weight(shape=(1,), name="late")  # Keras locks a built layer's state
    with compat.adding_state_after_build(layer):
        extra = layer.add_weight(shape=(1,), name="late")
    assert any(v is extra for v in layer.weights)
    with pytest.raises(ValueError):
        layer.add_weight(shape=(1,), name="later")


def test_first_replica_symbolic_build_is_the_hook_keras_calls():
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    assert hasattr(TensorFlowTrainer, "_maybe_symbolic_build")
    assert "iterator" in TensorFlowTrainer._maybe_symbolic_build.__code__.co_varnames


def test_freeze_concrete_function_folds_variables():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    concrete = tf.function(lambda x: model(x)).get_concrete_function(
        tf.TensorSpec((1, 2), tf.float32))
    graph_def = compat.freeze_concrete_function(concrete)
    ops = {node.op for node in graph_def.node}
    assert "Const" in ops and "ReadVariableOp" not in ops and "VarHandleOp" not in ops


PRIVATE_NAMES = ("tf.__internal__", "tensorflow.python", "._flatten_layers", "._inbound_nodes",
                 "._keras_history", "._tracker", "._compile_config", "._jit_compile",
                 "._learning_rate", "._maybe_symbolic_build", "keras.src")


def test_private_names_are_used_in_compat_only():
    package = pathlib.Path(compat.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "compat.py":
            continue
        text = path.read_text()
        offenders += [f"{path.relative_to(package)}: {name}" for name in PRIVATE_NAMES
                      if name in text]
    assert not offenders, offenders
