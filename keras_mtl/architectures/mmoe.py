"""MMoE: shared experts on each pyramid level, one softmax gate per task and level."""

import keras

from keras_mtl.architectures.architecture import Architecture, SharedParts, check_levels
from keras_mtl.architectures.architecture import keras_serializable
from keras_mtl.architectures.experts import ExpertMixture, expert_block, pooled
from keras_mtl.architectures.gates import GATE_TYPES, SoftmaxGate
from keras_mtl.trunks.pyramid import LEVELS
from keras_mtl.architectures.head_seeds import build_head


@keras_serializable
class MMoE(Architecture):
    """Multi-gate Mixture-of-Experts (Ma, Zhao, Yi, Chen, Hong, Chi, KDD 2018).

    The trunk is the shared bottom; on each pyramid level in `levels`,
    `num_experts` experts (`expert_block`: conv, BN, ReLU, keeping the
    level's shape) are shared by all tasks, and each task has its own gate
    per level that weighs them per sample. For task t at level l:

        g = gate_{t,l}(GAP(P_l))                      # (B, E), sums to 1
        m_t[l] = sum_e g[:, e] * expert_{e,l}(P_l)    # (B, H_l, W_l, C_l)

    Experts are per level and the gates read the level's globally pooled
    features (the paper's gate reads the input; here the input of a level's
    experts). Task t's head reads its mixed pyramid `m_t` (levels outside
    `levels` reach it unchanged). Reference behaviour: LibMTL's
    `architecture/MMoE.py` (median-research-group/LibMTL), where every
    expert is a whole encoder and the gates read the flattened image; here
    the experts share the trunk, which keeps the cost near hard sharing.

    Shared parameters: the trunk and every expert; shared features: the
    trunk's P2..P5 (with `rep_grad`, the experts, after the cut, get the
    plain sum of the task gradients). The gates' mean weights per task:
    `keras_mtl.architectures.gate_loads(model, images)`.

    Args:
        num_experts: E, experts per level.
        gate: `"softmax"` (the paper) or `"top_k"` (softmax over the
            `top_k` largest logits, the rest 0).
        top_k: experts kept per sample with `gate="top_k"`.
        levels: the levels with experts, a subset of `("P2", "P3", "P4", "P5")`.
        kernel_size: the experts' convolution size.

    Example:

    >>> model = keras_mtl.build_mtl(
    ...     [keras_mtl.tasks.Classification("c", 2), keras_mtl.tasks.Segmentation("s", 3)],
    ...     trunk="micro_resnet", weights=None, input_shape=(32, 32, 3),
    ...     architecture=MMoE(num_experts=2))
    >>> model.get_layer("s_mmoe_gate_P3").num_experts
    2
    """

    prefix = "mmoe"

    def __init__(self, num_experts=4, gate="softmax", top_k=2, levels=LEVELS, kernel_size=3):
        if int(num_experts) < 1:
            raise ValueError(f"{type(self).__name__}: num_experts must be >= 1, got {num_experts}.")
        if gate not in GATE_TYPES:
            raise ValueError(f"{type(self).__name__}: gate must be one of {GATE_TYPES}, "
                             f"got {gate!r}.")
        self.num_experts = int(num_experts)
        self.gate = gate
        self.top_k = int(top_k)
        self.levels = check_levels(levels, type(self).__name__)
        self.kernel_size = int(kernel_size)

    def make_gate(self, task_name, level):
        """The gate of `task_name` at `level`, `(B, C_l) -> (B, E)`."""
        return SoftmaxGate(self.num_experts, self.gate, self.top_k, task=task_name,
                           name=f"{task_name}_{self.prefix}_gate_{level}")

    def build(self, images, trunk, tasks, image_shape):
        features = trunk(images)  # {"P2": (B, H/4, W/4, C2), ..., "P5": (B, H/32, W/32, C5)}
        mixed = {task.name: dict(features) for task in tasks}
        experts = []
        for level in self.levels:
            x = features[level]  # (B, H_l, W_l, C_l)
            level_experts = [expert_block(x.shape[-1], self.kernel_size,
                                          f"{self.prefix}_expert{e}_{level}")
                             for e in range(self.num_experts)]
            outputs = [expert(x) for expert in level_experts]  # E x (B, H_l, W_l, C_l)
            experts.extend(level_experts)
            context = pooled(x, f"{self.prefix}_pool_{level}")  # (B, C_l)
            for task in tasks:
                weights = self.make_gate(task.name, level)(context)  # (B, E)
                mixer = ExpertMixture(name=f"{task.name}_{self.prefix}_mix_{level}")
                mixed[task.name][level] = mixer([weights, *outputs])
        outputs = {task.name: build_head(task, mixed[task.name], image_shape) for task in tasks}
        return outputs, SharedParts([trunk, *experts], keras.tree.flatten(features))

    def get_config(self):
        return {"num_experts": self.num_experts, "gate": self.gate, "top_k": self.top_k,
                "levels": list(self.levels), "kernel_size": self.kernel_size}
