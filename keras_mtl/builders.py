"""`build_mtl` and `build_single_task`: the user's entry points."""

import warnings

from keras_mtl import architectures, trunks
from keras_mtl.model import MultiTaskModel


def build_mtl(tasks, trunk="resnet50", weights="imagenet", input_shape=(224, 224, 3),
              weighting="auto", trainable_trunk=True, name="multi_task_model",
              architecture="hps", sync_batch_norm=True):
    """Builds a multi-task model: a trunk, one head per task, wired by `architecture`.

    Args:
        tasks: list of `keras_mtl.tasks.Task` with distinct names.
        trunk: a registered trunk name (`keras_mtl.trunks.names()`) or a
            `keras.Model` (see `keras_mtl.trunks.get`).
        weights: `"imagenet"`, `None` or a weights file path for the trunk.
        input_shape: `(H, W, 3)`, H and W multiples of 32.
        weighting: a weighting name, a `{task: weight}` dict, or a
            `keras_mtl.weighting.Weighting`. The default `"auto"` balances
            the tasks' gradient norms at the shared features, measured over
            the first 100 steps (`keras_mtl.weighting.AutoWeighting`); the
            README's leaderboard says why.
        trainable_trunk: `False` freezes the trunk (BatchNorm in inference).
        name: model name.
        architecture: how trunk and heads are wired, a name of
            `keras_mtl.architectures.names()` or an `Architecture`:
            `"hps"` (hard parameter sharing, default), `"mtan"`,
            `"cross_stitch"`, `"cascade"` (e.g.
            `architectures.Cascade(depends_on={"mask": "objects"})`),
            `"adapters"`, `"separate"`.
        sync_batch_norm: built inside a `tf.distribute` strategy with more
            than one replica, the `BatchNormalization` layers use global
            batch statistics (the one-device results); `False` keeps them
            per replica.

    Returns:
        A `keras_mtl.MultiTaskModel`.

    Example:

    >>> model = build_mtl(
    ...     [tasks.Classification("shape", 3), tasks.Segmentation("mask", 4)],
    ...     trunk="micro_resnet", weights=None, input_shape=(32, 32, 3),
    ...     weighting="uncertainty")
    >>> model.compile(optimizer="adam")
    >>> model.task_names, type(model.weighting).__name__
    (['shape', 'mask'], 'UncertaintyWeighting')
    """
    architecture = architectures.get(architecture)
    _warn_if_frozen_random_trunk(trunk, weights, trainable_trunk, architecture)
    trunk_model = trunks.get(trunk, input_shape=input_shape, weights=weights,
                             trainable=trainable_trunk)
    return MultiTaskModel(trunk_model, tasks, weighting=weighting, architecture=architecture,
                          sync_batch_norm=sync_batch_norm, name=name)


def _warn_if_frozen_random_trunk(trunk, weights, trainable_trunk, architecture):
    """Warns when a named trunk without pretrained weights would be frozen.

    Its features would stay random for the whole training: every task
    loses (on Penn-Fudan, `auto@adapters` from scratch lost 25-35% per task,
    mean of 3 folds, against single-task training).
    """
    freezes = getattr(architecture, "freeze_trunk", False)
    if weights is not None or not isinstance(trunk, str) or (trainable_trunk and not freezes):
        return
    why = (f"architecture {type(architecture).__name__} freezes the trunk" if freezes
           else "trainable_trunk=False freezes the trunk")
    fix = ("ResidualAdapters(freeze_trunk=False)" if freezes else "trainable_trunk=True")
    warnings.warn(f"build_mtl: {why}, but trunk {trunk!r} has weights=None, so its features "
                  f"stay random. Pass pretrained weights (weights='imagenet' or a file) or "
                  f"{fix}.", stacklevel=3)


def build_single_task(task, trunk="resnet50", weights="imagenet", input_shape=(224, 224, 3),
                      trainable_trunk=True, name=None):
    """Builds the single-task baseline of `task`: same trunk, one head.

    Used to measure what multi-task training gains (delta-m). Same
    arguments as `build_mtl`, with one task and no weighting.
    """
    return build_mtl([task], trunk=trunk, weights=weights, input_shape=input_shape,
                     weighting="equal", trainable_trunk=trainable_trunk,
                     name=name or f"single_task_{task.name}")
