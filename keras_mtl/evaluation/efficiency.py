"""Efficiency figures: parameters, FLOPs per image and images per second.

One multi-task model replaces T single-task models; `efficiency_report`
puts its figures next to the sum over the single-task models (FLOPs and
parameters add up; images/s of running the T models one after the other is
`1 / sum_t (1 / images_per_second_t)`).

- FLOPs come from TensorFlow's own profiler
  (`tf.compat.v1.profiler`, `float_operation`) on the frozen inference graph
  of one image: a convolution or matrix product counts 2 FLOPs per
  multiply-add (so FLOPs = 2 x MACs), bias adds and other element-wise ops 1
  per element; ops without a registered count (resizing, pooling
  bookkeeping, batch norm folded in inference, NMS) add nothing. Offline,
  deterministic, the same count for every run.
- Images/s times the compiled inference function (`decode=True`: what
  `predict` returns, NMS included) on a fixed batch, after warm-up calls;
  the best of `repeats` timings, which is the least disturbed by other
  processes sharing the CPU.

Example:

>>> model = keras_mtl.build_mtl(
...     [Classification("label", 3), Segmentation("mask", 4)],
...     trunk="micro_resnet", weights=None, input_shape=(32, 32, 3))
>>> count_params(model)
141411

Profiling and timing it (seconds: the profiler, then warm-up and timed runs):

```python
flops_per_image(model)                     # 14764657
images_per_second(model, batch_size=8)
```
"""

import time

import numpy as np
import tensorflow as tf

from keras_mtl import compat


def count_params(model):
    """Number of parameters (trainable and not) of a built model.

    The state of a `MultiTaskModel`'s weighting (task weights, running
    statistics, DB-MTL's gradient average) is training state, not part of
    the network that serves predictions, and is not counted.
    """
    weighting = getattr(model, "weighting", None)
    state = 0 if weighting is None else sum(
        int(np.prod(variable.shape)) for variable in weighting.variables)
    return int(model.count_params()) - state


def _image_shape(model, input_shape):
    if input_shape is not None:
        return tuple(input_shape)
    shape = getattr(model, "image_shape", None) or tuple(model.inputs[0].shape[1:])
    if any(s is None for s in shape):
        raise ValueError(f"The model's input shape {shape} is not fixed; pass input_shape.")
    return tuple(shape)


def flops_per_image(model, input_shape=None, decode=False):
    """FLOPs of one forward pass on one image, counted by TensorFlow's profiler.

    Args:
        model: a Keras model (e.g. a `keras_mtl.MultiTaskModel`).
        input_shape: `(H, W, C)`; default: the model's.
        decode: also count the decoding of a `MultiTaskModel` (softmax,
            detection peaks and NMS).

    Returns:
        An int: floating point operations per image, a multiply-add = 2.

    Example:

    >>> inputs = keras.Input((8, 8, 3))
    >>> conv = keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs))
    >>> flops_per_image(conv)   # 2 * 8 * 8 * 4 * (3 * 3 * 3)
    13824
    """
    shape = _image_shape(model, input_shape)

    def forward(images):
        outputs = model(images, training=False)
        return model.decode(outputs) if decode else outputs

    concrete = tf.function(forward).get_concrete_function(
        tf.TensorSpec((1,) + shape, tf.float32))
    frozen = compat.freeze_concrete_function(concrete)
    graph = tf.Graph()
    with graph.as_default(), compat.silenced_deprecations():  # the v1 profiler warns a lot
        tf.graph_util.import_graph_def(frozen, name="")
        options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        profile = tf.compat.v1.profiler.profile(graph, options=options)
    return int(profile.total_float_ops)


def images_per_second(model, batch_size=8, steps=5, warmup=2, repeats=3, decode=True,
                      input_shape=None, seed=0):
    """Inference throughput: images per second of the compiled forward pass.

    Args:
        model: a Keras model.
        batch_size: images per call.
        steps: calls per timing.
        warmup: untimed calls first (tracing, memory).
        repeats: timings; the best is returned.
        decode: time `model.decode` too (a `MultiTaskModel`'s `predict`).
        input_shape: `(H, W, C)`; default: the model's.
        seed: of the random uint8 images.

    Returns:
        A float: images per second.
    """
    shape = _image_shape(model, input_shape)
    images = tf.constant(np.random.default_rng(seed).integers(
        0, 256, (batch_size,) + shape, dtype="uint8"))
    use_decode = decode and hasattr(model, "decode")

    @tf.function
    def forward(x):
        outputs = model(x, training=False)
        return model.decode(outputs) if use_decode else outputs

    for _ in range(max(1, warmup)):
        tf.nest.map_structure(lambda t: t.numpy(), forward(images))
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        for _ in range(steps):
            outputs = forward(images)
        tf.nest.map_structure(lambda t: t.numpy(), outputs)  # wait for the last call
        best = min(best, time.perf_counter() - start)
    return batch_size * steps / best


def efficiency_report(multi_task_model, single_task_models, batch_size=8, steps=5, repeats=3,
                      measure_speed=True):
    """Parameters, FLOPs/image and images/s: the multi-task model vs the T single-task ones.

    Args:
        multi_task_model: the multi-task model.
        single_task_models: `{task: model}` (or a list) of single-task models.
        batch_size, steps, repeats: see `images_per_second`.
        measure_speed: `False` skips the timing (then images/s is `None`).

    Returns:
        A dict: `"multi_task"` and `"single_task_sum"` each
        `{"params", "flops", "images_per_second"}`, `"single_task"`
        `{task: {...}}`, and `"ratio"` (multi-task / sum) per figure.

    Example:

    ```python
    report = efficiency_report(mtl_model, {"a": model_a, "b": model_b}, measure_speed=False)
    report["ratio"]["params"] < 1.0
    # True
    ```
    """
    if not isinstance(single_task_models, dict):
        single_task_models = {getattr(m, "name", str(i)): m
                              for i, m in enumerate(single_task_models)}

    def figures(model):
        speed = (images_per_second(model, batch_size, steps, repeats=repeats)
                 if measure_speed else None)
        return {"params": count_params(model), "flops": flops_per_image(model),
                "images_per_second": speed}

    mtl = figures(multi_task_model)
    singles = {name: figures(model) for name, model in single_task_models.items()}
    total = {
        "params": sum(f["params"] for f in singles.values()),
        "flops": sum(f["flops"] for f in singles.values()),
        "images_per_second": (1.0 / sum(1.0 / f["images_per_second"] for f in singles.values())
                              if measure_speed and singles else None),
    }
    ratio = {key: (mtl[key] / total[key] if mtl[key] is not None and total[key] else None)
             for key in mtl}
    return {"multi_task": mtl, "single_task": singles, "single_task_sum": total, "ratio": ratio}
