"""CGC: shared and task-specific experts on each pyramid level, one gate per task."""

import keras

from keras_mtl.architectures.architecture import Architecture, SharedParts, check_levels
from keras_mtl.architectures.architecture import keras_serializable
from keras_mtl.architectures.experts import ExpertMixture, expert_block, pooled
from keras_mtl.architectures.gates import GATE_TYPES, SoftmaxGate
from keras_mtl.trunks.pyramid import LEVELS
from keras_mtl.architectures.head_seeds import build_head


@keras_serializable
class CGC(Architecture):
    """Customized Gate Control (Tang, Liu, Zhao, Gong, RecSys 2020, section 4.2).

    MMoE with the experts split into `num_shared_experts` shared ones and
    `num_task_experts` of each task's own: task t's gate weighs only the
    shared experts and its own, so another task's private experts never
    reach it. For task t at level l (in `levels`):

        g = gate_{t,l}(GAP(P_l))                          # (B, S + K)
        m_t[l] = sum_e g[:, e] * [shared_{1..S,l}(P_l), own_{t,1..K,l}(P_l)]_e

    Experts (`expert_block`: conv, BN, ReLU, keeping the level's shape)
    are per level and the gates read the level's globally pooled features;
    task t's head reads its mixed pyramid `m_t` (levels outside `levels`
    unchanged). Reference behaviour: LibMTL's `architecture/CGC.py`
    (median-research-group/LibMTL), whose experts are whole encoders on
    the image; here they sit on the shared trunk's pyramid.

    Shared parameters: the trunk and the shared experts (the private
    experts get their own task's gradient); shared features: the trunk's
    P2..P5. `keras_mtl.architectures.gate_loads(model, images)` gives each
    task's mean weights, shared experts first.

    Args:
        num_shared_experts: S, shared experts per level.
        num_task_experts: K, private experts per task and level.
        gate: `"softmax"` (the paper) or `"top_k"`.
        top_k: experts kept per sample with `gate="top_k"`.
        levels: the levels with experts, a subset of `("P2", "P3", "P4", "P5")`.
        kernel_size: the experts' convolution size.

    Example:

    >>> model = keras_mtl.build_mtl(
    ...     [keras_mtl.tasks.Classification("c", 2), keras_mtl.tasks.Segmentation("s", 3)],
    ...     trunk="micro_resnet", weights=None, input_shape=(32, 32, 3),
    ...     architecture=CGC(num_shared_experts=1, num_task_experts=1))
    >>> model.get_layer("c_cgc_gate_P5").num_experts
    2
    """

    prefix = "cgc"

    def __init__(self, num_shared_experts=2, num_task_experts=1, gate="softmax", top_k=2,
                 levels=LEVELS, kernel_size=3):
        owner = type(self).__name__
        if int(num_shared_experts) < 0 or int(num_task_experts) < 0 or (
                int(num_shared_experts) + int(num_task_experts) < 1):
            raise ValueError(f"{owner}: needs at least one expert per task, got "
                             f"num_shared_experts={num_shared_experts}, "
                             f"num_task_experts={num_task_experts}.")
        if gate not in GATE_TYPES:
            raise ValueError(f"{owner}: gate must be one of {GATE_TYPES}, got {gate!r}.")
        self.num_shared_experts = int(num_shared_experts)
        self.num_task_experts = int(num_task_experts)
        self.gate = gate
        self.top_k = int(top_k)
        self.levels = check_levels(levels, owner)
        self.kernel_size = int(kernel_size)

    num_layers = 1  # extraction layers (PLE stacks several)

    def build(self, images, trunk, tasks, image_shape):
        features = trunk(images)  # {"P2": (B, H/4, W/4, C2), ..., "P5": (B, H/32, W/32, C5)}
        mixed = {task.name: dict(features) for task in tasks}
        shared_layers = [trunk]
        for level in self.levels:
            x = features[level]  # (B, H_l, W_l, C_l)
            inputs = {task.name: x for task in tasks}
            shared_input = x
            for depth in range(self.num_layers):
                last = depth == self.num_layers - 1
                inputs, shared_input, layers = self._extract(
                    tasks, level, depth, inputs, shared_input, last)
                shared_layers.extend(layers)
            for task in tasks:
                mixed[task.name][level] = inputs[task.name]
        outputs = {task.name: build_head(task, mixed[task.name], image_shape) for task in tasks}
        return outputs, SharedParts(shared_layers, keras.tree.flatten(features))

    def _name(self, depth):
        return self.prefix if self.num_layers == 1 else f"{self.prefix}{depth}"

    def _experts(self, x, count, name):
        experts = [expert_block(x.shape[-1], self.kernel_size, f"{name}{e}")
                   for e in range(count)]
        return experts, [expert(x) for expert in experts]  # count x (B, H_l, W_l, C_l)

    def _extract(self, tasks, level, depth, inputs, shared_input, last):
        """One extraction layer at one level.

        Returns the tasks' mixed features, the next shared input (`None`
        on the last layer) and the layers every task reaches.
        """
        name = self._name(depth)
        shared, shared_out = self._experts(shared_input, self.num_shared_experts,
                                           f"{name}_shared_expert_{level}_")
        reached = list(shared)
        outputs, all_out = {}, list(shared_out)
        for task in tasks:
            own, own_out = self._experts(inputs[task.name], self.num_task_experts,
                                         f"{task.name}_{name}_expert_{level}_")
            if not last:  # they feed the shared gate: every task reaches them
                reached.extend(own)
            all_out.extend(own_out)
            context = pooled(inputs[task.name], f"{task.name}_{name}_pool_{level}")  # (B, C_l)
            weights = self._gate(len(shared_out) + len(own_out), task.name,
                                 f"{task.name}_{name}_gate_{level}")(context)  # (B, S + K)
            mixer = ExpertMixture(name=f"{task.name}_{name}_mix_{level}")
            outputs[task.name] = mixer([weights, *shared_out, *own_out])
        if last:
            return outputs, None, reached
        gate = self._gate(len(all_out), None, f"{name}_shared_gate_{level}")
        weights = gate(pooled(shared_input, f"{name}_shared_pool_{level}"))  # (B, S + T K)
        next_shared = ExpertMixture(name=f"{name}_shared_mix_{level}")([weights, *all_out])
        return outputs, next_shared, reached + [gate]

    def _gate(self, num_experts, task_name, name):
        return SoftmaxGate(num_experts, self.gate, self.top_k, task=task_name, name=name)

    def get_config(self):
        return {"num_shared_experts": self.num_shared_experts,
                "num_task_experts": self.num_task_experts, "gate": self.gate,
                "top_k": self.top_k, "levels": list(self.levels),
                "kernel_size": self.kernel_size}
