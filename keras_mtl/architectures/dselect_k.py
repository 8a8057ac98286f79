"""DSelect-k: MMoE whose gates are differentiable k-sparse selectors."""

from keras_mtl.architectures.architecture import keras_serializable
from keras_mtl.architectures.gates import DSelectGate
from keras_mtl.architectures.mmoe import MMoE
from keras_mtl.trunks.pyramid import LEVELS


@keras_serializable
class DSelectK(MMoE):
    """DSelect-k (Hazimeh et al., NeurIPS 2021): MMoE with sparse, smooth gates.

    The experts and their wiring are `MMoE`'s (per pyramid level, shared by
    all tasks, gates reading the level's globally pooled features); each
    task's gate per level is a `DSelectGate`: `num_selectors` (k)
    selectors, each a binary code of `ceil(log2 E)` smooth-step units, mixed
    by a softmax. Training drives the units to exact 0/1, after which each
    task uses at most k experts per level and sample (the per-example
    gate of the paper, section 3.2). The entropy regularisation
    (`entropy_weight`, and the validity penalty when E is not a power of
    two) is added to the objective with `add_loss`.

    Reference behaviour: LibMTL's `architecture/DSelect_k.py`
    (median-research-group/LibMTL), itself adapted from the authors'
    TensorFlow code (google-research `dselect_k_moe`): same smooth-step,
    binary codes, initialisation (`+-gamma/100` for the selector logits,
    `+-0.05` for the mixing logits) and penalties; there the experts are
    whole encoders and the gate reads the flattened image, and the entropy
    term is summed over the batch (here: its mean, so the weight does not
    depend on the batch size).

    Shared parameters: the trunk and every expert; shared features: the
    trunk's P2..P5. Gate loads: `keras_mtl.architectures.gate_loads`.

    Args:
        num_experts: E, experts per level.
        num_selectors: k, the experts each task keeps at convergence.
        gamma: width of the smooth-step transition.
        entropy_weight: weight of the selectors' entropy penalty.
        levels: the levels with experts, a subset of `("P2", "P3", "P4", "P5")`.
        kernel_size: the experts' convolution size.

    Example:

    >>> model = keras_mtl.build_mtl(
    ...     [keras_mtl.tasks.Classification("c", 2), keras_mtl.tasks.Segmentation("s", 3)],
    ...     trunk="micro_resnet", weights=None, input_shape=(32, 32, 3),
    ...     architecture=DSelectK(num_experts=4, num_selectors=2))
    >>> model.get_layer("c_dselect_k_gate_P5").num_bits
    2
    """

    prefix = "dselect_k"

    def __init__(self, num_experts=4, num_selectors=2, gamma=1.0, entropy_weight=1e-6,
                 levels=LEVELS, kernel_size=3):
        super().__init__(num_experts=num_experts, levels=levels, kernel_size=kernel_size)
        if int(num_selectors) < 1 or gamma <= 0:
            raise ValueError("DSelectK: num_selectors must be >= 1 and gamma > 0, got "
                             f"{num_selectors}, {gamma}.")
        self.num_selectors = int(num_selectors)
        self.gamma = float(gamma)
        self.entropy_weight = float(entropy_weight)

    def make_gate(self, task_name, level):
        return DSelectGate(self.num_experts, self.num_selectors, self.gamma,
                           self.entropy_weight, task=task_name,
                           name=f"{task_name}_{self.prefix}_gate_{level}")

    def get_config(self):
        return {"num_experts": self.num_experts, "num_selectors": self.num_selectors,
                "gamma": self.gamma, "entropy_weight": self.entropy_weight,
                "levels": list(self.levels), "kernel_size": self.kernel_size}
