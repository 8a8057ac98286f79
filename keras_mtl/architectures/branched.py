"""Branched: the trunk's early stages shared, a private copy of its later stages per task."""

from keras_mtl.architectures.architecture import Architecture, SharedParts, keras_serializable
from keras_mtl.architectures.columns import clone_trunk, split_stages
from keras_mtl.architectures.head_seeds import build_head
from keras_mtl.trunks.pyramid import LEVELS

BRANCH_LEVELS = LEVELS[1:]  # ("P3", "P4", "P5"): branching at P2 would share nothing


@keras_serializable
class Branched(Architecture):
    """Shared early stages; from level `branch_at` on, one trunk branch per task.

    The trunk is cut into its pyramid stages (`split_stages`). The stages
    below `branch_at` are shared by every task; each task named in
    `private` gets its own copy of the stages from `branch_at` to P5 (a
    clone that starts from the trunk's weights), and the other tasks share
    the trunk's own later stages (when every task is private, the first
    task keeps the trunk's stages and the others get copies). A task's
    head reads the shared levels and its branch's levels: with
    `branch_at="P4"`, P2 and P3 are shared and P4, P5 are the task's own.

    This is the "split architecture" that Misra et al. compare cross-stitch
    units with ("Cross-stitch Networks for Multi-task Learning", CVPR 2016,
    section 3: a network shared up to a layer, then one branch per task),
    and the family of trees that Vandenhende et al. search over
    ("Branched Multi-Task Networks: Deciding What Layers To Share", BMVC
    2020). Here the branching point is chosen by hand; `ltb` learns it.

    Private late stages give each task capacity of its own where features
    are most task-specific, at the cost of one copy of the later stages per
    private task (in a ResNet most of its parameters, little of its
    compute: they run at strides 16-32). On Penn-Fudan they did not bring
    the person masks back to their single-task IoU (README, "Which
    weighting should I use?"): measure before choosing it over `hps`.

    Shared parameters: the early stages (and the trunk's later stages when
    two or more tasks are not private). Shared features: the early levels'
    outputs, and the later levels' outputs of the trunk's own stages when
    they are shared: the cut a `rep_grad` weighting balances at.

    Args:
        branch_at: the first private level, `"P3"`, `"P4"` or `"P5"`.
        private: task names that get a branch of their own; `None` (the
            default) gives every task its own.

    Example:

    >>> model = keras_mtl.build_mtl(
    ...     [keras_mtl.tasks.Classification("c", 2), keras_mtl.tasks.Segmentation("s", 3)],
    ...     trunk="micro_resnet", weights=None, input_shape=(32, 32, 3),
    ...     architecture=keras_mtl.architectures.Branched(branch_at="P4"))
    >>> sorted(layer.name for layer in model.layers if layer.name.startswith("trunk"))
    ['trunk_micro_resnet_P2', 'trunk_micro_resnet_inner_P3', 'trunk_micro_resnet_inner_P4',
     'trunk_micro_resnet_inner_P5', 'trunk_micro_resnet_s_P4', 'trunk_micro_resnet_s_P5']
    >>> len(model.shared_features)  # P2 and P3
    2
    """

    def __init__(self, branch_at="P4", private=None):
        if branch_at not in BRANCH_LEVELS:
            raise ValueError(f"Branched: branch_at must be one of {BRANCH_LEVELS}, "
                             f"got {branch_at!r}.")
        if isinstance(private, str):
            private = [private]
        self.branch_at = branch_at
        self.private = None if private is None else [str(name) for name in private]

    def build(self, images, trunk, tasks, image_shape):
        names = [task.name for task in tasks]
        private = names if self.private is None else self.private
        unknown = sorted(set(private) - set(names))
        if unknown:
            raise ValueError(f"Branched: private names unknown task(s) {unknown}; "
                             f"the tasks are {names}.")
        stages = split_stages(trunk)
        start = LEVELS.index(self.branch_at)
        shared_levels, branch_levels = LEVELS[:start], LEVELS[start:]
        features = {}  # the shared levels, {level: (B, H_l, W_l, C_l)}
        x = images
        for level in shared_levels:
            x = features[level] = stages[level](x)
        common = [name for name in names if name not in private]
        # owner[task]: whose branch the task reads; None is the trunk's own later stages,
        # kept by the tasks that are not private (or by the first task when all are).
        owner = {name: None if name in common else name for name in names}
        if not common:
            owner[names[0]] = None
        branch_features = {}  # owner -> {level: (B, H_l, W_l, C_l)}, shared levels included
        for key in dict.fromkeys(owner.values()):
            levels, x = dict(features), features[shared_levels[-1]]
            for level in branch_levels:
                stage = stages[level] if key is None else clone_trunk(
                    stages[level], f"{trunk.name}_{key}_{level}")
                x = levels[level] = stage(x)
            branch_features[key] = levels
        outputs = {task.name: build_head(task, branch_features[owner[task.name]], image_shape)
                   for task in tasks}
        shared = [stages[level] for level in shared_levels]
        cut = [features[level] for level in shared_levels]
        if len(common) >= 2:  # the trunk's later stages are shared too: the cut comes after them
            shared += [stages[level] for level in branch_levels]
            cut += [branch_features[None][level] for level in branch_levels]
        return outputs, SharedParts(shared, cut)

    def get_config(self):
        return {"branch_at": self.branch_at, "private": self.private}
