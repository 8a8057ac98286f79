"""Architectures: how the trunk and the task heads are wired.

`get(identifier)` accepts a registered name (`names()` lists them), a
`{"class_name", "config"}` dict, a registered class or an `Architecture`
instance; `build_mtl(..., architecture=...)` and `MultiTaskModel` call it.

| name           | class                  | what the tasks share                               |
|----------------|------------------------|----------------------------------------------------|
| `hps`          | `HardParameterSharing` | the whole trunk (default)                          |
| `mtan`         | `MTAN`                 | the trunk; per-task attention at each level        |
| `branched`     | `Branched`             | the early stages; each task its own later stages   |
| `cross_stitch` | `CrossStitch`          | nothing directly: T columns mixed by learned units |
| `cascade`      | `Cascade`              | the trunk; a head reads other heads' predictions   |
| `adapters`     | `ResidualAdapters`     | a (frozen) trunk; per-task residual adapters       |
| `task_norm`    | `TaskNormalization`    | the trunk's filters; its norm layers per task      |
| `separate`     | `Separate`             | nothing: one trunk per task                        |
| `mmoe`         | `MMoE`                 | trunk + experts per level; a softmax gate per task |
| `cgc`          | `CGC`                  | trunk + shared experts; private experts per task   |
| `ple`          | `PLE`                  | stacked CGC layers joined by shared gates          |
| `dselect_k`    | `DSelectK`             | MMoE experts; k-sparse smooth-step selector gates  |
| `ltb`          | `LTB`                  | T columns; each stage learns its parent stage      |

The mixture-of-experts architectures (`mmoe`, `cgc`, `ple`, `dselect_k`)
put their experts on the trunk's pyramid levels; `gate_loads(model,
images)` reports each task's mean gate weight per expert.

Each is built with the Functional API inside the `MultiTaskModel`, so the
model saves, reloads and exports as usual, and tells gradient-based
weightings what its tasks share (`SharedParts`, `model.shared_variables`,
`model.shared_features`).

Example:

>>> model = keras_mtl.build_mtl(
...     [keras_mtl.tasks.Classification("c", 2), keras_mtl.tasks.Segmentation("s", 3)],
...     trunk="micro_resnet", weights=None, input_shape=(32, 32, 3),
...     architecture="mtan", weighting="pcgrad")
>>> keras_mtl.architectures.names()
['adapters', 'branched', 'cascade', 'cgc', 'cross_stitch', 'dselect_k', 'hps', 'ltb', 'mmoe',
 'mtan', 'ple', 'separate', 'task_norm']
"""

from keras_mtl.architectures.adapters import ResidualAdapters
from keras_mtl.architectures.architecture import Architecture, SharedParts
from keras_mtl.architectures.branched import Branched
from keras_mtl.architectures.cascade import Cascade, PredictionMap, dependency_order
from keras_mtl.architectures.cgc import CGC
from keras_mtl.architectures.columns import clone_trunk, split_stages
from keras_mtl.architectures.cross_stitch import CrossStitch, CrossStitchUnit
from keras_mtl.architectures.dselect_k import DSelectK
from keras_mtl.architectures.experts import ExpertMixture, expert_block
from keras_mtl.architectures.gate_loads import gate_loads
from keras_mtl.architectures.gates import DSelectGate, SoftmaxGate, smooth_step
from keras_mtl.architectures.hps import HardParameterSharing
from keras_mtl.architectures.ltb import LTB, BranchingUnit
from keras_mtl.architectures.mmoe import MMoE
from keras_mtl.architectures.mtan import MTAN
from keras_mtl.architectures.ple import PLE
from keras_mtl.architectures.separate import Separate
from keras_mtl.architectures.task_norm import TaskNormalization, task_normalized_trunk
from keras_mtl.registry import Registry

ARCHITECTURES = Registry("architecture", base=Architecture)
ARCHITECTURES.register("hps")(HardParameterSharing)
ARCHITECTURES.register("mtan")(MTAN)
ARCHITECTURES.register("cross_stitch")(CrossStitch)
ARCHITECTURES.register("cascade")(Cascade)
ARCHITECTURES.register("adapters")(ResidualAdapters)
ARCHITECTURES.register("separate")(Separate)
ARCHITECTURES.register("mmoe")(MMoE)
ARCHITECTURES.register("cgc")(CGC)
ARCHITECTURES.register("ple")(PLE)
ARCHITECTURES.register("dselect_k")(DSelectK)
ARCHITECTURES.register("ltb")(LTB)
ARCHITECTURES.register("branched")(Branched)
ARCHITECTURES.register("task_norm")(TaskNormalization)


def names():
    """Registered architecture names."""
    return ARCHITECTURES.names()


def get(identifier, **kwargs):
    """An `Architecture` from a name, a config dict, a class or an instance.

    Args:
        identifier: see `keras_mtl.registry.Registry.get`; `None` means `"hps"`.
        **kwargs: constructor arguments when `identifier` is a name or class,
            e.g. `get("cascade", depends_on={"mask": "objects"})`.

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
    """
    return ARCHITECTURES.get("hps" if identifier is None else identifier, **kwargs)


__all__ = [
    "ARCHITECTURES", "Architecture", "Branched", "BranchingUnit", "CGC", "Cascade", "CrossStitch",
    "CrossStitchUnit", "DSelectGate", "DSelectK", "ExpertMixture", "HardParameterSharing", "LTB",
    "MMoE", "MTAN", "PLE", "PredictionMap", "ResidualAdapters", "Separate", "SharedParts",
    "SoftmaxGate", "TaskNormalization", "clone_trunk", "dependency_order", "expert_block",
    "gate_loads", "get", "names", "smooth_step", "split_stages", "task_normalized_trunk",
]
