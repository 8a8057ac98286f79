"""Cross-stitch networks: one trunk column per task, mixed by learned units."""

import warnings

import keras
import numpy as np
from keras import ops

from keras_mtl.architectures.architecture import Architecture, SharedParts, check_levels
from keras_mtl.architectures.architecture import keras_serializable
from keras_mtl.architectures.columns import clone_trunk, split_stages
from keras_mtl.trunks.pyramid import LEVELS
from keras_mtl.architectures.head_seeds import build_head

MODES = ("auto", "stages", "outputs")


def identity_like(num_tasks, alpha_same):
    """`(T, T)` mixing matrix: `alpha_same` on the diagonal, the rest spread evenly."""
    if num_tasks == 1:
        return np.ones((1, 1), "float32")
    other = (1.0 - alpha_same) / (num_tasks - 1)
    matrix = np.full((num_tasks, num_tasks), other, "float32")
    np.fill_diagonal(matrix, alpha_same)
    return matrix


@keras_serializable
class CrossStitchUnit(keras.layers.Layer):
    """Mixes T same-shaped feature maps with a learned `(T, T)` matrix.

    `outputs[t] = sum_s alpha[t, s] * inputs[s]` (Misra et al., CVPR 2016),
    one `alpha` per unit, or one per channel with `per_channel=True`
    (`(T, T, C)`). `alpha` starts near the identity: `alpha_same` on the
    diagonal and `(1 - alpha_same) / (T - 1)` elsewhere (the paper's best
    initialisation is 0.9 / 0.1 for two tasks), so each column starts mostly
    itself. `alpha` is a float32 variable (also under mixed precision).

    Args:
        alpha_same: initial weight of a column on itself.
        per_channel: one mixing matrix per channel.

    Example:

    >>> unit = CrossStitchUnit(alpha_same=0.9)
    >>> a, b = unit([np.ones((1, 2, 2, 3)), np.zeros((1, 2, 2, 3))])
    >>> round(float(a[0, 0, 0, 0]), 4), round(float(b[0, 0, 0, 0]), 4)
    (0.9, 0.1)
    """

    def __init__(self, alpha_same=0.9, per_channel=False, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= alpha_same <= 1.0:
            raise ValueError(f"CrossStitchUnit: alpha_same must be in [0, 1], got {alpha_same}.")
        self.alpha_same = float(alpha_same)
        self.per_channel = bool(per_channel)

    def build(self, input_shape):
        num_tasks, channels = len(input_shape), input_shape[0][-1]
        matrix = identity_like(num_tasks, self.alpha_same)  # (T, T)
        if self.per_channel:
            matrix = np.repeat(matrix[:, :, None], channels, axis=2)  # (T, T, C)

        def initializer(shape, dtype=None):
            return ops.convert_to_tensor(matrix, dtype or "float32")

        self.alpha = self.add_weight(shape=matrix.shape, initializer=initializer, name="alpha",
                                     dtype="float32")

    def call(self, inputs):
        x = ops.stack(list(inputs), axis=0)  # (T, B, H, W, C)
        alpha = ops.cast(self.alpha, x.dtype)
        if self.per_channel:
            mixed = ops.einsum("tsc,sbhwc->tbhwc", alpha, x)
        else:
            mixed = ops.einsum("ts,sbhwc->tbhwc", alpha, x)  # (T, B, H, W, C)
        return [mixed[index] for index in range(len(inputs))]

    def compute_output_shape(self, input_shape):
        return [tuple(shape) for shape in input_shape]

    def get_config(self):
        return {**super().get_config(), "alpha_same": self.alpha_same,
                "per_channel": self.per_channel}


@keras_serializable
class CrossStitch(Architecture):
    """Cross-stitch networks (Misra, Shrivastava, Gupta, Hebert, CVPR 2016).

    One trunk column per task (the given trunk for the first task, copies
    that start from its weights for the others, `clone_trunk`), joined by a
    `CrossStitchUnit` after each stage in `levels`: the unit mixes the T
    columns' features at that level, and each column continues from its
    mixed features. Task t's head reads column t's mixed pyramid.

    Cost: T trunks, so about T times the trunk's parameters, FLOPs and
    activation memory of hard sharing (the units themselves are tiny). Meant
    for small T (2-4 tasks) and small trunks; for many tasks prefer `mtan`
    or `adapters`.

    Stages: `mode="stages"` cuts each column into its pyramid stages
    (`split_stages`: images -> P2 -> P3 -> P4 -> P5, which works for the
    ResNet v1, VGG and small ResNet trunks), as in the paper. Where a trunk
    cannot be cut (ResNet v2: a level also reads an earlier tensor),
    `mode="outputs"` mixes only the columns' pyramid outputs: a unit per
    level combines the T finished pyramids, but the columns do not exchange
    features while computing them (a simplification, weaker than the paper).
    `mode="auto"` (default) cuts when it can and otherwise warns and mixes
    the outputs.

    Weightings: every task's loss reaches every column, so the shared
    parameters are all columns (and, with stages, the units). With
    `mode="outputs"` the shared features are the T columns' P2..P5 (so
    `rep_grad` works); with stages there is no such cut and a `rep_grad`
    weighting takes the parameter gradients instead. The paper also
    trains the units with a 100-1000x larger learning rate; here they use
    the optimizer's.

    Args:
        levels: the stages after which units mix, a subset of
            `("P2", "P3", "P4", "P5")`.
        alpha_same: initial self-weight of the units (0.9: each column
            starts 90 % itself; the others share 0.1).
        per_channel: one mixing matrix per channel.
        mode: `"auto"`, `"stages"` or `"outputs"` (above).

    Example:

    >>> model = keras_mtl.build_mtl(
    ...     [tasks.Classification("c", 2), tasks.Segmentation("s", 3)],
    ...     trunk="micro_resnet", weights=None, input_shape=(32, 32, 3),
    ...     architecture="cross_stitch")
    >>> tuple(model.get_layer("cross_stitch_P3").alpha.shape)
    (2, 2)
    """

    def __init__(self, levels=LEVELS, alpha_same=0.9, per_channel=False, mode="auto"):
        self.levels = check_levels(levels, "CrossStitch")
        if not 0.0 <= alpha_same <= 1.0:
            raise ValueError(f"CrossStitch: alpha_same must be in [0, 1], got {alpha_same}.")
        if mode not in MODES:
            raise ValueError(f"CrossStitch: mode must be one of {MODES}, got {mode!r}.")
        self.alpha_same = float(alpha_same)
        self.per_channel = bool(per_channel)
        self.mode = mode

    def _unit(self, level):
        return CrossStitchUnit(self.alpha_same, self.per_channel, name=f"cross_stitch_{level}")

    def build(self, images, trunk, tasks, image_shape):
        columns = [trunk] + [clone_trunk(trunk, f"{trunk.name}_{task.name}") for task in tasks[1:]]
        stages = None
        if self.mode != "outputs":
            try:
                stages = [split_stages(column) for column in columns]
            except ValueError as error:
                if self.mode == "stages":
                    raise
                warnings.warn(f"CrossStitch: {error} Mixing the columns' pyramid outputs "
                              "instead (mode='outputs').", stacklevel=2)
        pyramids = [{} for _ in tasks]
        if stages is not None:
            units, x = [], [images] * len(columns)
            for level in LEVELS:
                # T tensors (B, H_l, W_l, C_l)
                x = [column[level](x_t) for column, x_t in zip(stages, x)]
                if level in self.levels:
                    unit = self._unit(level)
                    x = unit(x)
                    units.append(unit)
                for pyramid, x_t in zip(pyramids, x):
                    pyramid[level] = x_t
            shared_layers = [stage for column in stages for stage in column.values()] + units
            shared = SharedParts(shared_layers, features=())
        else:
            raw = [column(images) for column in columns]  # T dicts of P2..P5
            for level in LEVELS:
                mixed = ([raw_t[level] for raw_t in raw] if level not in self.levels
                         else self._unit(level)([raw_t[level] for raw_t in raw]))
                for pyramid, x_t in zip(pyramids, mixed):
                    pyramid[level] = x_t
            shared = SharedParts(columns, keras.tree.flatten(raw))
        outputs = {task.name: build_head(task, pyramid, image_shape)
                   for task, pyramid in zip(tasks, pyramids)}
        return outputs, shared

    def get_config(self):
        return {"levels": list(self.levels), "alpha_same": self.alpha_same,
                "per_channel": self.per_channel, "mode": self.mode}
