"""PLE: stacked CGC extraction layers with a shared gate between them."""

from keras_mtl.architectures.architecture import keras_serializable
from keras_mtl.architectures.cgc import CGC
from keras_mtl.trunks.pyramid import LEVELS


@keras_serializable
class PLE(CGC):
    """Progressive Layered Extraction (Tang, Liu, Zhao, Gong, RecSys 2020).

    `num_layers` CGC extraction layers stacked on each pyramid level in
    `levels`. In layer j, task t's private experts and gate read task t's
    features from layer j-1, the shared experts read the shared features
    from layer j-1 (all start from the trunk's P_l), and, below the top
    layer, a shared gate weighs *all* experts (shared and every task's) to
    give the next shared features (section 4.3). The top layer is a `CGC`:

        s_0 = t_0 = P_l
        t_{j+1} = mix(gate_t(GAP(t_j)), [shared(s_j), own_t(t_j)])
        s_{j+1} = mix(gate_s(GAP(s_j)), [shared(s_j), own_1(t_j), ..., own_T(t_j)])

    Reference behaviour: LibMTL's `architecture/PLE.py`
    (median-research-group/LibMTL), which runs the extraction along the
    stages of T + S ResNet encoders, applies the shared experts to each
    task's stream and has no shared gate; this follows the paper's shared
    gate instead, on top of the shared trunk's pyramid.

    Shared parameters: the trunk, the shared experts and gates, and the
    private experts below the top layer (they feed the shared gate, so
    every task reaches them); the top layer's private experts get their own
    task's gradient only. Shared features: the trunk's P2..P5.
    `keras_mtl.architectures.gate_loads` averages each task's gates over
    levels and layers (shared experts first, then its own); the shared
    gates are left out.

    Args:
        num_layers: extraction layers (1 is `CGC`).
        num_shared_experts, num_task_experts, gate, top_k, levels,
        kernel_size: as `CGC`, per layer.

    Example:

    >>> model = keras_mtl.build_mtl(
    ...     [keras_mtl.tasks.Classification("c", 2), keras_mtl.tasks.Segmentation("s", 3)],
    ...     trunk="micro_resnet", weights=None, input_shape=(32, 32, 3),
    ...     architecture=PLE(num_layers=2, num_shared_experts=1, num_task_experts=1))
    >>> model.get_layer("ple0_shared_gate_P5").num_experts  # 1 shared + 2 tasks x 1
    3
    """

    prefix = "ple"

    def __init__(self, num_layers=2, num_shared_experts=2, num_task_experts=1, gate="softmax",
                 top_k=2, levels=LEVELS, kernel_size=3):
        super().__init__(num_shared_experts, num_task_experts, gate, top_k, levels, kernel_size)
        if int(num_layers) < 1:
            raise ValueError(f"PLE: num_layers must be >= 1, got {num_layers}.")
        if int(num_layers) > 1 and self.num_shared_experts < 1:
            raise ValueError("PLE: layers below the top need a shared expert "
                             "(num_shared_experts >= 1).")
        self.num_layers = int(num_layers)

    def get_config(self):
        return {"num_layers": self.num_layers, **super().get_config()}
