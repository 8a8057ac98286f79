"""Every private Keras or TensorFlow name keras_mtl uses, in one place.

Keras and TensorFlow have no public API for a few things the package
needs. Each such use is wrapped here, named after what it does, and
`tests/test_compat.py` checks that every private name still exists with
the expected behaviour, so a Keras or TensorFlow release that changes one
fails that test loudly instead of breaking training silently.
`pyproject.toml` pins Keras below the next minor release for the same
reason; raise the pin after `tests/test_compat.py` passes on it.

- `strategy_supports_no_merge_call`, `maybe_merge_call`: run an update in
  cross-replica context under strategies that need merge calls (the
  pattern of `keras.optimizers.LossScaleOptimizer`).
- `all_sublayers`: every layer nested in a model, including the layers
  held by custom layers (`Model.layers` lists only the top level).
- `producer`, `node_input_tensors`: which layer call made a symbolic
  tensor and with which inputs (cutting a nested trunk into stages).
- `FirstReplicaSymbolicBuild`: builds a model under a multi-worker
  strategy from one replica's batch (Keras reduces the whole batch nest,
  which `MultiWorkerMirroredStrategy` rejects).
- `adding_state_after_build`: lets a built layer create one more variable.
- `freeze_concrete_function`, `silenced_deprecations`: a concrete
  function's variables as constants, and the v1 profiler quiet (to count
  FLOPs).
"""

import contextlib

import keras
import tensorflow as tf

# The Keras minor versions this module was checked against (see pyproject.toml).
CHECKED_KERAS = ("3.15",)


def strategy_supports_no_merge_call():
    """Whether the current strategy can update variables without a merge call."""
    return tf.__internal__.distribute.strategy_supports_no_merge_call()


def maybe_merge_call(fn, strategy, *args):
    """`fn(strategy, *args)` in cross-replica context where the strategy needs it."""
    return tf.__internal__.distribute.interim.maybe_merge_call(fn, strategy, *args)


def all_sublayers(model):
    """Every layer nested in `model` (not `model` itself), depth first."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def producer(tensor):
    """`(operation, node_index)` of the layer call that produced a symbolic tensor."""
    history = tensor._keras_history
    return history.operation, history.node_index


def node_input_tensors(operation, node_index):
    """The symbolic input tensors of `operation`'s call number `node_index`."""
    return operation._inbound_nodes[node_index].input_tensors


class FirstReplicaSymbolicBuild:
    """Mixin for a `keras.Model`: the symbolic build before `fit` reads one replica's batch.

    Keras' TensorFlow trainer builds the model from the first distributed
    batch after reducing the whole `(images, targets)` nest with
    `strategy.reduce`, which `MultiWorkerMirroredStrategy` rejects (it
    reduces one tensor, not a nest). Only the batch's shapes and dtypes
    are used, so one replica's batch does.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None and self.distribute_strategy.num_replicas_in_sync > 1:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda value: (value.values[0]
                                   if isinstance(value, tf.distribute.DistributedValues)
                                   else value), next(batches))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


@contextlib.contextmanager
def adding_state_after_build(layer):
    """Lets a built `layer` create variables inside the block (Keras locks a
    built layer's state)."""
    tracker = layer._tracker
    locked = tracker.locked
    tracker.unlock()
    try:
        yield
    finally:
        if locked:
            tracker.lock()


def freeze_concrete_function(concrete):
    """`concrete`'s graph with its variables folded into constants (a `GraphDef`)."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    return convert_variables_to_constants_v2(concrete).graph.as_graph_def()


def silenced_deprecations():
    """A context in which TensorFlow's v1 deprecation warnings are not printed."""
    from tensorflow.python.util import deprecation

    return deprecation.silence()


def keras_minor_version():
    """`"3.15"` for Keras 3.15.x."""
    return ".".join(keras.__version__.split(".")[:2])
