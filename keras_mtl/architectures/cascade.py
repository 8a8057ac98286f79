"""Cascade: a task's head also reads the predictions of the tasks it depends on."""

import keras
from keras import layers, ops

from keras_mtl.architectures.architecture import Architecture, SharedParts, keras_serializable
from keras_mtl.trunks.pyramid import LEVELS
from keras_mtl.architectures.head_seeds import build_head

POOLS = ("average", "max")
ACTIVATIONS = ("softmax", "sigmoid")


@keras_serializable
class PredictionMap(keras.layers.Layer):
    """A task's raw output as a map of probabilities at one feature size.

    Input: logits `(B, C)` (image level: the probabilities are broadcast to
    every cell) or a dense map `(B, H', W', C')` (of which the first
    `channels` are used; then average- or max-pooled, or repeated, to the
    size). Output: `(B, height, width, channels)`.

    Args:
        size: `(height, width)` of the output.
        channels: how many leading channels of the input to keep (`None`: all).
        activation: `"softmax"` or `"sigmoid"` over those channels.
        pool: `"average"` or `"max"` when shrinking a dense map.
        stop_gradient: block the gradient to the source.

    Example:

    >>> PredictionMap((2, 2))(np.zeros((1, 3), "float32")).shape
    TensorShape([1, 2, 2, 3])
    """

    def __init__(self, size, channels=None, activation="softmax", pool="average",
                 stop_gradient=True, **kwargs):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"PredictionMap: activation must be one of {ACTIVATIONS}.")
        if pool not in POOLS:
            raise ValueError(f"PredictionMap: pool must be one of {POOLS}.")
        self.size = tuple(int(s) for s in size)
        self.channels = None if channels is None else int(channels)
        self.activation = activation
        self.pool = pool
        self.stop_gradient = bool(stop_gradient)

    def call(self, y):
        if self.stop_gradient:
            y = ops.stop_gradient(y)
        if self.channels is not None:
            y = y[..., :self.channels]
        y = ops.softmax(y, axis=-1) if self.activation == "softmax" else ops.sigmoid(y)
        height, width = self.size
        if len(y.shape) == 2:  # (B, C) -> (B, h, w, C)
            return ops.tile(y[:, None, None, :], (1, height, width, 1))
        in_height, in_width = y.shape[1], y.shape[2]  # (B, H', W', C)
        if in_height >= height:
            factor = (in_height // height, in_width // width)
            pool = ops.average_pool if self.pool == "average" else ops.max_pool
            return y if factor == (1, 1) else pool(y, factor, factor, padding="valid")
        y = ops.repeat(y, height // in_height, axis=1)  # nearest upsampling
        return ops.repeat(y, width // in_width, axis=2)

    def compute_output_shape(self, input_shape):
        channels = self.channels if self.channels is not None else input_shape[-1]
        return (input_shape[0], *self.size, channels)

    def get_config(self):
        return {**super().get_config(), "size": list(self.size), "channels": self.channels,
                "activation": self.activation, "pool": self.pool,
                "stop_gradient": self.stop_gradient}


def prediction_map_args(task):
    """`(channels, activation, pool)` reading `task`'s raw output as probabilities.

    Classification: its softmax (sigmoid if multi-label) broadcast over the
    cells; Segmentation: its softmax map, average-pooled; Detection: its
    class heatmap (the first `num_classes` channels, sigmoid), max-pooled
    so that peaks survive. Other tasks may define
    `prediction_map_args() -> (channels, activation, pool)`.
    """
    from keras_mtl.tasks.classification import Classification
    from keras_mtl.tasks.detection import Detection
    from keras_mtl.tasks.segmentation import Segmentation

    if hasattr(task, "prediction_map_args"):
        return task.prediction_map_args()
    if isinstance(task, Classification):
        return None, "sigmoid" if task.multi_label else "softmax", "average"
    if isinstance(task, Segmentation):
        return None, "softmax", "average"
    if isinstance(task, Detection):
        return task.num_classes, "sigmoid", "max"
    raise ValueError(
        f"Cascade cannot read the output of task '{task.name}' ({type(task).__name__}) as a "
        "map; give the task a `prediction_map_args()` method returning (channels, activation, "
        "pool)."
    )


def dependency_order(names, depends_on):
    """`names` ordered so that every task comes after the tasks it depends on.

    Args:
        names: task names, in model order.
        depends_on: `{task: [source, ...]}`.

    Returns:
        The list of names (model order kept where free).

    Raises:
        ValueError: on a cycle, naming it (`a -> b -> a`).
    """
    order, state = [], {}  # state: 1 = on the current path, 2 = done

    def visit(name, path):
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise ValueError(
                f"Cascade: the task dependencies form a cycle: {' -> '.join(cycle)} "
                "(read 'a -> b' as 'a depends on b'). Remove one of these dependencies."
            )
        state[name] = 1
        for source in depends_on.get(name, ()):
            visit(source, path + [name])
        state[name] = 2
        order.append(name)

    for name in names:
        visit(name, [])
    return order


@keras_serializable
class Cascade(Architecture):
    """Hard sharing plus declared dependencies: a head reads other heads' outputs.

    For tasks that inform each other (where the objects are helps the mask),
    `depends_on={"mask": "objects"}` feeds the `objects` head's prediction,
    as a probability map (`PredictionMap`: a detection heatmap, a
    segmentation softmax, or broadcast class probabilities), into the `mask`
    head: at each pyramid level,

        P_l' = P_l + conv1x1(map_l)    # (B, H_l, W_l, C_l)

    with the 1x1 convolution starting at zero (so the dependent head starts
    as in hard sharing and learns how much to use the source; this is a 1x1
    convolution over the concatenation of P_l and the map whose P_l part is
    fixed to the identity). With several sources their maps are concatenated.
    By default the source prediction is a constant for the dependent task
    (`stop_gradient=True`); with `False`, the dependent task's loss also
    trains the source head. A cycle is refused with a `ValueError` naming it.

    Weightings: shared parameters: the trunk's; shared features: its P2..P5.
    With `stop_gradient=False` a source head is reached by two tasks' losses
    and gets the plain sum of their gradients.

    Args:
        depends_on: `{task: source}` or `{task: [sources]}` by task name.
        stop_gradient: block the dependent task's gradient to its sources.

    Raises:
        ValueError (at build): no dependency, an unknown task name, a cycle.

    Example:

    >>> model = keras_mtl.build_mtl(
    ...     [tasks.Detection("objects", 3), tasks.Segmentation("mask", 4)],
    ...     trunk="micro_resnet", weights=None, input_shape=(32, 32, 3),
    ...     architecture=Cascade(depends_on={"mask": "objects"}))
    >>> [layer.name for layer in model.layers if layer.name.startswith("mask_from_objects")]
    ['mask_from_objects_P5', 'mask_from_objects_P4', 'mask_from_objects_P3', 'mask_from_objects_P2']
    """

    def __init__(self, depends_on=None, stop_gradient=True):
        depends_on = dict(depends_on or {})
        self.depends_on = {
            str(task): [sources] if isinstance(sources, str) else [str(s) for s in sources]
            for task, sources in depends_on.items()
        }
        self.stop_gradient = bool(stop_gradient)

    def build(self, images, trunk, tasks, image_shape):
        by_name = {task.name: task for task in tasks}
        depends_on = {task: sources for task, sources in self.depends_on.items() if sources}
        if not depends_on:
            raise ValueError(
                "Cascade: no dependency declared; pass e.g. "
                "architecture=keras_mtl.architectures.Cascade(depends_on={'mask': 'objects'}) "
                "(or use architecture='hps')."
            )
        for task, sources in depends_on.items():
            for name in [task, *sources]:
                if name not in by_name:
                    raise ValueError(f"Cascade: unknown task '{name}' in depends_on; the model's "
                                     f"tasks are {sorted(by_name)}.")
        order = dependency_order([task.name for task in tasks], depends_on)
        features = trunk(images)  # {"P2": (B, H/4, W/4, C2), ..., "P5": (B, H/32, W/32, C5)}
        outputs = {}
        for name in order:
            task = by_name[name]
            task_features = features
            if name in depends_on:
                sources = [(by_name[source], outputs[source]) for source in depends_on[name]]
                task_features = self._condition(name, features, sources)
            outputs[name] = build_head(task, task_features, image_shape)
        outputs = {task.name: outputs[task.name] for task in tasks}
        return outputs, SharedParts([trunk], keras.tree.flatten(features))

    def _condition(self, name, features, sources):
        conditioned = {}
        for level in LEVELS:
            shared = features[level]  # (B, H_l, W_l, C_l)
            maps = []
            for source, output in sources:
                channels, activation, pool = prediction_map_args(source)
                maps.append(PredictionMap(
                    tuple(shared.shape[1:3]), channels, activation, pool, self.stop_gradient,
                    name=f"{name}_from_{source.name}_{level}")(output))  # (B, H_l, W_l, K)
            x = maps[0] if len(maps) == 1 else layers.Concatenate(
                name=f"{name}_cascade_concat_{level}")(maps)
            x = layers.Conv2D(shared.shape[-1], 1, kernel_initializer="zeros",
                              name=f"{name}_cascade_{level}")(x)
            conditioned[level] = layers.Add(name=f"{name}_cascade_add_{level}")([shared, x])
        return conditioned

    def get_config(self):
        return {"depends_on": {task: list(sources) for task, sources in self.depends_on.items()},
                "stop_gradient": self.stop_gradient}
