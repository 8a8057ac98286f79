"""`gate_loads`: how much each task's gates weigh each expert, on some images."""

import keras
import numpy as np

from keras_mtl.architectures.gates import DSelectGate, SoftmaxGate


def task_gates(model):
    """`{task: [gate layers]}` of a mixture-of-experts model, in model task order.

    Only the gates in the model's graph count (a gate whose task's head does
    not read its level is pruned by the Functional model); the shared gates
    of `ple` (`task=None`) are left out.
    """
    gates = {name: [] for name in model.task_names}
    for layer in model.layers:
        if isinstance(layer, (SoftmaxGate, DSelectGate)) and layer.task in gates:
            gates[layer.task].append(layer)
    return {name: layers for name, layers in gates.items() if layers}


def gate_loads(model, images, batch_size=32):
    """Mean gate weight per expert for each task, over `images`.

    The load balance of a mixture of experts: for every task, its gates'
    weights `(N, E)` averaged over the images and over the task's gates
    (one per pyramid level, and per extraction layer for `ple`). A load
    near `1/E` everywhere means the gate does not select; a load near
    one-hot means the task uses one expert. For `cgc` and `ple` the E
    weights are the shared experts first, then the task's own.

    Args:
        model: a `MultiTaskModel` built with `mmoe`, `cgc`, `ple` or
            `dselect_k`.
        images: `(N, H, W, 3)` array or tensor.
        batch_size: batch size of the forward pass.

    Returns:
        `{task: (E,) float32 numpy array}`, each summing to 1 (up to
        rounding; DSelect-k with E not a power of two: at most 1).

    Raises:
        ValueError: if the model has no task gates.

    Example:

    >>> model = keras_mtl.build_mtl(
    ...     [keras_mtl.tasks.Classification("c", 2)], trunk="micro_resnet",
    ...     weights=None, input_shape=(32, 32, 3),
    ...     architecture=keras_mtl.architectures.MMoE(num_experts=3))
    >>> loads = gate_loads(model, np.zeros((2, 32, 32, 3), "float32"))
    >>> loads["c"].shape, bool(np.isclose(loads["c"].sum(), 1.0))
    ((3,), True)
    """
    gates = task_gates(model)
    if not gates:
        raise ValueError(f"Model '{model.name}' has no task gates (architecture "
                         f"{type(model.architecture).__name__}); gate_loads needs a mixture of "
                         "experts (mmoe, cgc, ple, dselect_k).")
    flat = [layer for layers in gates.values() for layer in layers]
    view = keras.Model(model.input, [layer.output for layer in flat])
    weights = view.predict(images, batch_size=batch_size, verbose=0)  # each (N, E)
    weights = weights if isinstance(weights, list) else [weights]
    means = iter([np.asarray(w, "float32").mean(axis=0) for w in weights])  # each (E,)
    return {name: np.mean([next(means) for _ in layers], axis=0) for name, layers in gates.items()}
