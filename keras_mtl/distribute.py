"""Helpers for training under `tf.distribute` (TensorFlow only).

`MultiTaskModel` trains under `tf.distribute.MirroredStrategy` and
`MultiWorkerMirroredStrategy` with the results of one device for the same
global batch: each task's loss is normalised over the labelled elements of
the *global* batch, the per-task gradients of gradient-based weightings are
all-reduced before they are aggregated, and the logged metrics are those of
the global batch (see `keras_mtl.training.losses`). A model built inside a
strategy with more than one replica synchronises its BatchNorm layers
(`build_mtl(..., sync_batch_norm=True)`, the default). This module holds the
plumbing around it:

- `set_logical_cpus(n)`: split the CPU into `n` logical devices, to try a
  `MirroredStrategy` without GPUs (call it before TensorFlow touches a device).
- `make_strategy(name)`: `"default"`, `"mirrored"` or `"multi_worker"`.
- `synchronize_batch_norm(model)`: global batch statistics in every
  `BatchNormalization` layer (what `build_mtl` does under a strategy; for a
  model built otherwise).
- `local_tf_config(ports, index)` and `free_ports(n)`: a `TF_CONFIG` for
  workers on `127.0.0.1`, for trying `MultiWorkerMirroredStrategy` locally.

and the replica arithmetic of the train steps: `replica_context`,
`scale_for_replicas`, `all_gather_rows`, `is_multi_worker` and
`PerReplicaXLA`.

Build and compile the model inside `strategy.scope()`, batch the data by the
*global* batch size, and pass `jit_compile=True` explicitly where XLA is
wanted (Keras' `"auto"` turns XLA off under a strategy; the model then
compiles its replica-local forward and backward passes itself, see
`PerReplicaXLA`).

Example (a program of its own: the logical CPUs must be set before any TensorFlow op):

```python
from keras_mtl import distribute
distribute.set_logical_cpus(2)          # first thing in the program
strategy = distribute.make_strategy("mirrored")
with strategy.scope():
    model = keras_mtl.build_mtl(tasks, trunk="micro_resnet", weights=None,
                                input_shape=(32, 32, 3))
    model.compile(optimizer="sgd", jit_compile=True)
model.fit(dataset_of_global_batches, epochs=1)
```
"""

import contextlib
import json
import os
import socket

import keras
import tensorflow as tf
from keras import ops

from keras_mtl import compat

STRATEGIES = ("default", "mirrored", "multi_worker")


def set_logical_cpus(count):
    """Splits the first physical CPU into `count` logical devices.

    Must run before TensorFlow initialises its devices (before any tensor
    is made); a `MirroredStrategy` over `/cpu:0 .. /cpu:{count-1}` then has
    `count` replicas.

    Args:
        count: int >= 1.

    Returns:
        The logical CPU device names.

    Raises:
        ValueError: if `count` < 1.
        RuntimeError: if TensorFlow has already initialised its devices
            with another configuration.
    """
    count = int(count)
    if count < 1:
        raise ValueError(f"The number of logical CPUs must be >= 1, got {count}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as error:
        current = tf.config.list_logical_devices("CPU")
        if len(current) == count:
            return [device.name for device in current]
        raise RuntimeError(
            f"Cannot split the CPU into {count} logical devices: TensorFlow already initialised "
            f"{len(current)}. Call set_logical_cpus() first thing in the program, before any "
            f"TensorFlow op."
        ) from error
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def make_strategy(name="default", devices=None):
    """Returns a `tf.distribute.Strategy` by name.

    Args:
        name: `"default"` (no distribution), `"mirrored"` (all local GPUs,
            or `devices`, or every logical CPU when there is no GPU) or
            `"multi_worker"` (`MultiWorkerMirroredStrategy`, configured by
            the `TF_CONFIG` environment variable).
        devices: optional device names for `"mirrored"`.

    Raises:
        ValueError: unknown name, or `"multi_worker"` without `TF_CONFIG`.
    """
    if name in (None, "default", "none"):
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if devices is None and not tf.config.list_logical_devices("GPU"):
            devices = [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "The 'multi_worker' strategy needs the TF_CONFIG environment variable "
                "(cluster and task); see keras_mtl.distribute.local_tf_config."
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}; use one of {STRATEGIES}.")


def synchronize_batch_norm(model):
    """Makes every `BatchNormalization` layer of `model` use global batch statistics.

    Under a strategy each replica otherwise normalises with the statistics
    of its own part of the batch, so training differs from one device's.
    Keras' `synchronized=True` (TensorFlow backend) all-reduces the moments
    instead; it is read at call time, so setting it on a built model works.
    The moments are then computed as `E[x^2] - E[x]^2`, so results match one
    device closely but not bit for bit.

    Returns:
        The number of layers changed.
    """
    changed = 0
    for layer in compat.all_sublayers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
            layer.synchronized = True
            changed += 1
    return changed


def free_ports(count):
    """`count` distinct TCP ports free on 127.0.0.1 now (for local workers)."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
            ports.append(sock.getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()
    return ports


def local_tf_config(ports, index):
    """The `TF_CONFIG` JSON of worker `index` of a cluster on `127.0.0.1:ports`.

    Example:

    >>> ports = free_ports(2)
    >>> env = {**os.environ, "TF_CONFIG": local_tf_config(ports, 0)}  # worker 0
    >>> json.loads(env["TF_CONFIG"])["task"]
    {'type': 'worker', 'index': 0}
    """
    return json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
        "task": {"type": "worker", "index": int(index)},
    })


def is_chief(strategy=None):
    """Whether this process is the chief (writes checkpoints, exports, logs)."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (
        task_type == "worker" and task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


# --- replica arithmetic of the train steps ----------------------------------------------
def replica_context():
    """The replica context of a `tf.distribute` step with more than one replica, else `None`.

    `None` on one device, in cross-replica context, and under a strategy
    with a single replica: there the train step runs exactly as without a
    strategy.
    """
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def num_replicas():
    """R: the number of replicas of the current step (1 on one device)."""
    context = replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def scale_for_replicas(value):
    """`value / R` under `R` > 1 replicas (Keras' `scale_loss_for_distribution`).

    The optimizer sums the gradients of the replicas; dividing each
    replica's objective by R makes that sum the one-device gradient.
    """
    replicas = num_replicas()
    return value if replicas == 1 else value * (1.0 / replicas)


def all_gather_rows(context, rows):
    """All-gathers `(T, D_r)` rows along D; returns `(rows, offset, D_r)`.

    The gathered rows `(T, sum_r D_r)` hold the replicas' columns in replica
    order and `offset` is where this replica's `D_r` columns start.
    """
    size = ops.shape(rows)[1]
    sizes = context.all_gather(ops.reshape(ops.cast(size, "int32"), (1,)), axis=0)  # (R,)
    replica = ops.cast(context.replica_id_in_sync_group, "int32")
    offset = ops.sum(ops.where(ops.arange(ops.shape(sizes)[0]) < replica, sizes, 0))
    return context.all_gather(rows, axis=1), offset, size


def is_multi_worker(strategy):
    """True under a `MultiWorkerMirroredStrategy` with more than one worker."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    resolver = strategy.cluster_resolver
    return resolver is not None and len(resolver.cluster_spec().as_dict().get("worker", [])) > 1


class PerReplicaXLA:
    """XLA for the replica-local parts of a step under a multi-device strategy.

    Keras compiles the whole step function with XLA when
    `jit_compile=True`, which fails under a multi-device strategy (the
    compiled function would span the devices' variables, keras#19005), and
    its `jit_compile="auto"` turns XLA off there. So under a strategy with
    more than one replica and `jit_compile=True`, the model's step function
    is built without XLA (`step_function_without_xla`) and the step compiles
    its heavy, replica-local parts (forward pass and, through the tape, its
    backward pass) with `wrap`, leaving the cross-replica all-reduces and
    the optimizer update outside XLA. One instance per model holds its
    compiled functions.
    """

    def __init__(self):
        self.active = False
        self._functions = {}

    def wrap(self, key, fn):
        """`fn` compiled with XLA (cached under `key`) when active, else `fn`."""
        if not self.active:
            return fn
        if key not in self._functions:
            self._functions[key] = tf.function(fn, jit_compile=True, reduce_retracing=True)
        return self._functions[key]

    @contextlib.contextmanager
    def step_function_without_xla(self, model):
        """While Keras makes `model`'s step function: no XLA around the replicas."""
        self.active = bool(model.jit_compile and not model.run_eagerly
                           and model.distribute_strategy.num_replicas_in_sync > 1)
        if not self.active:
            yield
            return
        model.jit_compile = False
        try:
            yield
        finally:
            model.jit_compile = True


__all__ = [
    "STRATEGIES", "PerReplicaXLA", "all_gather_rows", "free_ports", "is_chief",
    "is_multi_worker", "local_tf_config", "make_strategy", "num_replicas", "replica_context",
    "scale_for_replicas", "set_logical_cpus", "synchronize_batch_norm",
]
