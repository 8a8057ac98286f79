"""How a step's gradients reach the variables: the trunk optimizer, trunk
freezing and the held heads of tasks switched off (see
`keras_mtl.training.controls` for the controls themselves)."""

import keras
import tensorflow as tf
from keras import ops

from keras_mtl import compat


def _cond_with_updates(predicate, true_fn, false_fn, args):
    """`tf.cond(predicate, true_fn(*args), false_fn(*args))` that may call optimizers.

    Under a `tf.distribute` strategy that needs merge calls, the cond runs
    in cross-replica context and each branch runs per replica (the pattern
    of `keras.optimizers.LossScaleOptimizer`).
    """
    def run(fn, *fn_args):
        fn(*fn_args)
        return ops.zeros((), "bool")

    if not tf.distribute.has_strategy() or compat.strategy_supports_no_merge_call():
        tf.cond(predicate, lambda: run(true_fn, *args), lambda: run(false_fn, *args))
        return

    def cross_replica(distribution, predicate, *fn_args):
        predicate = distribution.experimental_local_results(predicate)[0]

        def branch(fn):
            return lambda: run(distribution.extended.call_for_each_replica, fn, fn_args)

        tf.cond(predicate, branch(true_fn), branch(false_fn))

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(predicate, *args))


def _hold(variables, old_values, keep_old):
    """`variable = where(keep_old, old, variable)`, distribution-aware."""
    def update(distribution, variables, old_values, keep_old):
        def assign(variable, old, keep):
            return variable.assign(tf.where(keep, old, variable))

        for variable, old, keep in zip(variables, old_values, keep_old):
            tf_variable = variable.value if isinstance(variable, keras.Variable) else variable
            distribution.extended.update(tf_variable, assign, args=(old, keep), group=False)

    compat.maybe_merge_call(update, tf.distribute.get_strategy(), variables, old_values, keep_old)


def apply_gradients(model, gradients, variables):
    """`model.optimizer.apply(gradients, variables)` with the training controls.

    - The trunk's variables go to `model.trunk_optimizer` when there is one
      (their gradients unscaled by the main optimizer's loss scale, and the
      trunk step skipped when they are not finite).
    - With `freeze_trunk_epochs`, the trunk is updated only from that epoch
      on (a `tf.cond` on the epoch variable).
    - The heads of the tasks switched off by the curriculum keep their values.

    `None` gradients are dropped (their variables are left untouched).
    """
    pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
    controls = getattr(model, "training_controls", None)
    optimizer = model.optimizer
    if controls is None:
        optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        return

    held = []
    if controls.task_schedule:
        applied = {id(v) for _, v in pairs}
        mask = ops.convert_to_tensor(controls.task_enabled)
        for index, (name, head) in enumerate(zip(controls.task_names,
                                                 controls.head_variables(model))):
            if name in controls.task_schedule:
                held.extend((v, ops.less(mask[index], 0.5)) for v in head if id(v) in applied)
        old_values = [tf.identity(v.value if isinstance(v, keras.Variable) else v)
                      for v, _ in held]

    trunk_ids = {id(v) for v in model.trunk.trainable_variables}
    trunk = [(g, v) for g, v in pairs if id(v) in trunk_ids]
    others = [(g, v) for g, v in pairs if id(v) not in trunk_ids]
    other_grads, other_vars = [g for g, _ in others], [v for _, v in others]
    trunk_grads, trunk_vars = [g for g, _ in trunk], [v for _, v in trunk]

    if controls.trunk_optimizer is not None:
        if others:
            optimizer.apply(other_grads, other_vars)
        if trunk:
            scale = ops.cast(optimizer.scale_loss(ops.ones((), "float32")), "float32")
            trunk_grads = [g / ops.cast(scale, g.dtype) for g in trunk_grads]
            finite = ops.all(ops.stack([ops.all(ops.isfinite(g)) for g in trunk_grads]))
            _cond_with_updates(ops.logical_and(controls.trunk_active(), finite),
                               controls.trunk_optimizer.apply, lambda *args: None,
                               (trunk_grads, trunk_vars))
    elif controls.freeze_trunk_epochs and trunk:
        all_grads, all_vars = [g for g, _ in pairs], [v for _, v in pairs]

        def update_all(all_grads, all_vars, other_grads, other_vars):
            optimizer.apply(all_grads, all_vars)

        def update_others(all_grads, all_vars, other_grads, other_vars):
            if other_vars:
                optimizer.apply(other_grads, other_vars)

        _cond_with_updates(controls.trunk_active(), update_all, update_others,
                           (all_grads, all_vars, other_grads, other_vars))
    else:
        optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])

    if held:
        _hold([v for v, _ in held], old_values, [keep for _, keep in held])
