"""LTB: T trunk columns whose stages learn which column's stage to branch from."""

import keras
from keras import ops

from keras_mtl.architectures.architecture import Architecture, SharedParts, keras_serializable
from keras_mtl.architectures.columns import clone_trunk, split_stages
from keras_mtl.trunks.pyramid import LEVELS
from keras_mtl.architectures.head_seeds import build_head


@keras_serializable
class BranchingUnit(keras.layers.Layer):
    """N children each pick one of N parents: Gumbel-softmax in training, argmax at inference.

    Learns branching logits `(N, N)` (child, parent), starting at 0
    (uniform, as in the paper and the reference code). In training it
    samples `y = softmax((logits + gumbel) / temperature)` per call (one
    sample per batch) and, with `hard=True`, uses the one-hot of each row's
    argmax with the soft sample's gradient (straight-through); at inference
    it uses the one-hot of the logits' argmax (ties: the first parent), the
    learned tree. The same `y` mixes every group of inputs, so a child's
    lower-level features follow the same branch.

    Inputs: a flat list of `G * N` tensors, G groups of N (one per parent);
    output: the same structure, child i of group g being
    `sum_p y[i, p] * inputs[g * N + p]`.

    Args:
        num_nodes: N.
        temperature: the Gumbel-softmax temperature.
        hard: straight-through one-hot samples in training.
        seed: seed of the Gumbel noise.

    Example:

    >>> unit = BranchingUnit(2)
    >>> a, b = unit([np.ones((1, 3), "float32"), np.zeros((1, 3), "float32")])
    >>> float(a[0, 0]), float(b[0, 0])  # logits tie: both children take parent 0
    (1.0, 1.0)
    """

    def __init__(self, num_nodes, temperature=1.0, hard=True, seed=None, **kwargs):
        super().__init__(**kwargs)
        if int(num_nodes) < 1 or temperature <= 0:
            raise ValueError("BranchingUnit: num_nodes >= 1 and temperature > 0.")
        self.num_nodes = int(num_nodes)
        self.temperature = float(temperature)
        self.hard = bool(hard)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="gumbel_seed")

    def build(self, input_shape):
        self.logits = self.add_weight(shape=(self.num_nodes, self.num_nodes), initializer="zeros",
                                      name="logits", dtype="float32")

    def routing(self, training=False):
        """`(N, N)` child x parent weights, each row summing to 1."""
        n = self.num_nodes
        if not training:
            return ops.one_hot(ops.argmax(self.logits, axis=-1), n, dtype="float32")
        uniform = keras.random.uniform((n, n), 1e-6, 1.0 - 1e-6, seed=self.seed_generator)
        gumbel = -ops.log(-ops.log(uniform))  # (N, N)
        soft = ops.softmax((self.logits + gumbel) / self.temperature, axis=-1)  # (N, N)
        if not self.hard:
            return soft
        hard = ops.one_hot(ops.argmax(soft, axis=-1), n, dtype="float32")
        return hard + soft - ops.stop_gradient(soft)  # forward: one-hot; backward: soft

    def call(self, inputs, training=False):
        n = self.num_nodes
        y = self.routing(training)  # (N, N)
        out = []
        for start in range(0, len(inputs), n):
            parents = ops.stack(inputs[start:start + n], axis=0)  # (N, B, ...)
            weights = ops.reshape(ops.cast(y, parents.dtype),
                                  (n, n) + (1,) * (len(parents.shape) - 1))
            mixed = ops.sum(weights * parents[None], axis=1)  # (N, B, ...)
            out.extend(mixed[i] for i in range(n))
        return out

    def compute_output_shape(self, input_shape):
        return [tuple(shape) for shape in input_shape]

    def get_config(self):
        return {**super().get_config(), "num_nodes": self.num_nodes,
                "temperature": self.temperature, "hard": self.hard, "seed": self.seed}


@keras_serializable
class LTB(Architecture):
    """Learning to Branch (Guo, Lee, Ulbricht, ICML 2020).

    One trunk column per task (the given trunk and `clone_trunk` copies),
    cut into its pyramid stages (`split_stages`). Before each stage after
    the first (P3, P4, P5), a `BranchingUnit` lets node i of that stage
    choose its parent among the T nodes of the stage below, sampled with
    Gumbel-softmax in training and the argmax at inference: a learned tree
    from shared stem to task-specific branches. Task t reads node t of P5
    and, at lower levels, the features on its own path (the same routing
    applied down the pyramid). Reference behaviour: LibMTL's
    `architecture/LTB.py` (median-research-group/LibMTL): T ResNet
    encoders, one routing per ResNet layer, hard straight-through samples,
    logits starting uniform.

    Deviations: the temperature is fixed (`temperature`; the reference
    anneals it per epoch as `epochs / (20 sqrt(epoch + 1))` after a warm-up
    in which every child reads the sum of its parents); at inference the
    reference keeps sampling, here the argmax tree is used, so predictions
    and exports are deterministic. The trunk must be cuttable into stages
    (ResNet v1, VGG, the small ResNets; not ResNet v2).

    Cost: T trunks (like `cross_stitch`). Shared parameters: every column's
    stages and the units (a task's loss can reach any column); no shared
    features (a `rep_grad` weighting takes the parameter gradients).

    Args:
        temperature: the Gumbel-softmax temperature.
        hard: straight-through one-hot samples in training (the reference);
            `False`: the soft relaxed samples.
        seed: seed of the Gumbel noise (each unit gets `seed + index`).

    Example:

    >>> model = keras_mtl.build_mtl(
    ...     [keras_mtl.tasks.Classification("c", 2), keras_mtl.tasks.Segmentation("s", 3)],
    ...     trunk="micro_resnet", weights=None, input_shape=(32, 32, 3),
    ...     architecture="ltb")
    >>> tuple(model.get_layer("ltb_branch_P4").logits.shape)
    (2, 2)
    """

    def __init__(self, temperature=1.0, hard=True, seed=None):
        if temperature <= 0:
            raise ValueError(f"LTB: temperature must be > 0, got {temperature}.")
        self.temperature = float(temperature)
        self.hard = bool(hard)
        self.seed = None if seed is None else int(seed)

    def build(self, images, trunk, tasks, image_shape):
        columns = [trunk] + [clone_trunk(trunk, f"{trunk.name}_{task.name}") for task in tasks[1:]]
        stages = [split_stages(column) for column in columns]
        n = len(tasks)
        # paths[i]: node i's features on its path, {level: (B, H_l, W_l, C_l)}
        paths = [{"P2": column["P2"](images)} for column in stages]
        units = []
        for index, level in enumerate(LEVELS[1:]):
            seed = None if self.seed is None else self.seed + index
            unit = BranchingUnit(n, self.temperature, self.hard, seed, name=f"ltb_branch_{level}")
            below = list(paths[0])  # the levels so far, in order
            mixed = unit([path[lv] for lv in below for path in paths])  # len(below) * n
            units.append(unit)
            paths = [{lv: mixed[g * n + i] for g, lv in enumerate(below)} for i in range(n)]
            previous = below[-1]
            for i, column in enumerate(stages):
                paths[i][level] = column[level](paths[i][previous])
        outputs = {task.name: build_head(task, path, image_shape)
                   for task, path in zip(tasks, paths)}
        shared = [stage for column in stages for stage in column.values()] + units
        return outputs, SharedParts(shared, features=())

    def get_config(self):
        return {"temperature": self.temperature, "hard": self.hard, "seed": self.seed}
