"""Helpers for training under `tf.distribute` (TensorFlow only).

`MultiTaskModel` trains under `tf.distribute.MirroredStrategy` and
`MultiWorkerMirroredStrategy` with the results of one device for the same
global batch: each task's loss is normalised over the labelled elements of
the *global* batch, the per-task gradients of gradient-based weightings are
all-reduced before they are aggregated, and the logged metrics are those of
the global batch (see `MultiTaskModel.global_task_losses`). This module holds
the plumbing around it:

- `set_logical_cpus(n)`: split the CPU into `n` logical devices, to try a
  `MirroredStrategy` without GPUs (call it before TensorFlow touches a device).
- `make_strategy(name)`: `"default"`, `"mirrored"` or `"multi_worker"`.
- `synchronize_batch_norm(model)`: global batch statistics in every
  `BatchNormalization` layer (per-replica statistics otherwise differ from
  one device's).
- `local_tf_config(ports, index)` and `free_ports(n)`: a `TF_CONFIG` for
  workers on `127.0.0.1`, for trying `MultiWorkerMirroredStrategy` locally.

Build and compile the model inside `strategy.scope()`, batch the data by the
*global* batch size, and pass `jit_compile=True` explicitly where XLA is
wanted (Keras' `"auto"` turns XLA off under a strategy; the model then
compiles its replica-local forward and backward passes itself, see
`MultiTaskModel.compiled_per_replica`).

Example:

>>> from keras_mtl import distribute
>>> distribute.set_logical_cpus(2)          # first thing in the program
>>> strategy = distribute.make_strategy("mirrored")
>>> with strategy.scope():
...     model = keras_mtl.build_mtl(tasks, trunk="micro_resnet", weights=None,
...                                 input_shape=(32, 32, 3))
...     distribute.synchronize_batch_norm(model)
...     model.compile(optimizer="sgd", jit_compile=True)
>>> model.fit(dataset_of_global_batches, epochs=1)
"""

import json
import os
import socket

import keras
import tensorflow as tf

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
    for layer in model._flatten_layers(include_self=False, recursive=True):
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


__all__ = [
    "STRATEGIES", "free_ports", "is_chief", "local_tf_config", "make_strategy",
    "set_logical_cpus", "synchronize_batch_norm",
]
