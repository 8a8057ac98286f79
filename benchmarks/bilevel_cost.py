"""What Auto-Lambda's bilevel update costs on our model (issue 21).

Auto-Lambda (Liu, Johns and Davison, "Auto-Lambda: Disentangling Dynamic
Task Relationships", TMLR 2022; reference code github.com/lorenmt/auto-lambda,
`auto_lambda.py` and `trainer_dense.py`) learns the task weights `lambda` by
one step of a meta-optimizer (Adam, lr 1e-4, `lambda` initialised to 0.1)
before every training step. Its meta-gradient needs, per step:

1. the gradient `g` of `sum_t lambda_t L_t(theta)` on the training batch
   (a forward and a backward pass) and the virtual weights
   `theta' = theta - alpha * g` (alpha: the model's learning rate);
2. the gradient `d` of the primary tasks' loss on a validation batch at
   `theta'` (a forward and a backward pass at the virtual weights; in the
   reference's multi-task setting the primary tasks are all tasks and the
   "validation" batch is another batch of the training set, drawn by a
   second, differently shuffled loader);
3. the finite-difference Hessian-vector product
   `(dL/dlambda(theta + eps d) - dL/dlambda(theta - eps d)) / (2 eps)`,
   `eps = 0.01 / ||d||`: since `dL/dlambda_t = L_t`, these are two forward
   passes on the training batch (no backward pass through the model);
4. `lambda <- Adam(lambda, -alpha * hessian)`, then the ordinary step on
   `sum_t lambda_t L_t` (a forward and a backward pass).

Sides, each one `tf.function` on one model (tiny_resnet, T = 3 shapes tasks,
one fixed training batch and one fixed "validation" batch of another seed):

- `fit_equal`: the model's own compiled train function (what `fit` runs), equal weighting;
- `equal`: a hand-written step, forward, backward, `optimizer.apply`, equal weighting (the
  fair baseline: the Auto-Lambda sides are written the same way);
- `auto_lambda`: the reference's order, steps 1-4: three forward+backward passes and two
  forward passes;
- `auto_lambda_lagged`: the ordinary step reuses the gradient `g` of step 1 (taken with the
  weights before this step's meta-update, so `lambda` acts one step late): two
  forward+backward passes and two forward passes.

Timed interleaved with `benchmarks.timing` (ratio = median of paired per-block ratios), in
wall time and in the process' CPU time (`bench_weighting.CpuClock`, the steadier figure on a
machine loaded by other jobs).
Batch-norm moving statistics are updated by every training-mode forward pass, as in the
reference (its `compute_hessian` runs the model in train mode twice).

    nice -n 19 python -m benchmarks.bilevel_cost [--size 64] [--batch 16] [--repeats 7]
"""

import argparse
import json
import os
import platform
import sys
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)


def build(args):
    import keras
    import tensorflow as tf
    from keras import ops

    from benchmarks import common
    from keras_mtl.training.gradients import gradients_or_zeros
    from keras_mtl.training.steps import forward_and_losses

    settings = common.Settings.make(image_size=args.size, batch_size=args.batch, trunk=args.trunk)
    common.reset()
    tasks = common.shapes_tasks()
    keys = [task.name for task in tasks]
    train = common.shapes_batch(settings, keys, seed=0)
    val = common.shapes_batch(settings, keys, seed=1)
    model = common.build_model(settings, tasks, name="mtl_bilevel")
    fit_step = common.TrainStep(model, train)  # builds the optimizer
    variables = model.trainable_variables
    optimizer = model.optimizer
    alpha = float(optimizer.learning_rate.numpy())
    num_tasks = len(keys)
    meta_weights = keras.Variable(ops.full((num_tasks,), 0.1), name="auto_lambda")
    meta_optimizer = keras.optimizers.Adam(1e-4)
    meta_optimizer.build([meta_weights])

    def losses_of(images, targets):
        _, losses, present = forward_and_losses(model, images, targets, {}, training=True)
        return losses, present

    @tf.function
    def equal_step(images, targets):
        with tf.GradientTape() as tape:
            losses, present = losses_of(images, targets)
            total = ops.sum(losses * present)
        optimizer.apply(gradients_or_zeros(tape, total, variables), variables)
        return total

    def auto_lambda(images, targets, val_images, val_targets, lagged):
        lam = ops.convert_to_tensor(meta_weights)
        # 1. g = d sum_t lambda_t L_t / d theta; theta' = theta - alpha g.
        with tf.GradientTape() as tape:
            losses, present = losses_of(images, targets)
            total = ops.sum(lam * losses * present)
        grads = gradients_or_zeros(tape, total, variables)
        backup = [tf.identity(v.value) for v in variables]
        for variable, grad in zip(variables, grads):
            variable.assign_sub(alpha * grad)
        # 2. d = d L_val(theta') / d theta' (all tasks primary).
        with tf.GradientTape() as tape:
            val_losses, val_present = losses_of(val_images, val_targets)
            val_total = ops.sum(val_losses * val_present)
        direction = gradients_or_zeros(tape, val_total, variables)
        norm = tf.linalg.global_norm(direction)
        eps = 0.01 / (norm + 1e-12)
        # 3. dL/dlambda at theta +- eps d: the task losses, two forward passes.
        for variable, old, d in zip(variables, backup, direction):
            variable.assign(old + eps * d)
        plus, _ = losses_of(images, targets)
        for variable, old, d in zip(variables, backup, direction):
            variable.assign(old - eps * d)
        minus, _ = losses_of(images, targets)
        for variable, old in zip(variables, backup):
            variable.assign(old)
        hessian = (plus - minus) * present / (2.0 * eps)
        # 4. meta step, then the ordinary step.
        meta_optimizer.apply([-alpha * hessian], [meta_weights])
        if lagged:
            optimizer.apply(grads, variables)
            return total
        lam = ops.convert_to_tensor(meta_weights)
        with tf.GradientTape() as tape:
            losses, present = losses_of(images, targets)
            total = ops.sum(lam * losses * present)
        optimizer.apply(gradients_or_zeros(tape, total, variables), variables)
        return total

    reference_step = tf.function(lambda *a: auto_lambda(*a, lagged=False))
    lagged_step = tf.function(lambda *a: auto_lambda(*a, lagged=True))

    def call(fn, *inputs):
        return lambda: float(fn(*inputs))

    sides = {
        "fit_equal": fit_step,
        "equal": call(equal_step, *train),
        "auto_lambda": call(reference_step, *train, *val),
        "auto_lambda_lagged": call(lagged_step, *train, *val),
    }
    return settings, model, meta_weights, sides


def main(argv=None):
    import keras_mtl.quiet  # noqa: F401

    from benchmarks import timing
    from benchmarks.bench_weighting import CpuClock

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--trunk", default="tiny_resnet")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    settings, model, meta_weights, sides = build(args)
    load_start = os.getloadavg()
    first = {}
    for name, side in sides.items():
        start = time.perf_counter()
        side()
        first[name] = time.perf_counter() - start
    clocks = {name: CpuClock(side) for name, side in sides.items()}
    times = timing.interleaved_times(clocks, args.warmup, args.repeats, args.steps)
    cpu = {name: clock.blocks(args.warmup, args.steps) for name, clock in clocks.items()}
    result = {
        "settings": vars(args), "tasks": [task.name for task in model.tasks],
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "first_call_s": first,
        "median_step_s": {name: timing.median(t) for name, t in times.items()},
        "ratio_to_equal": {name: timing.paired_ratio(t, times["equal"])
                           for name, t in times.items()},
        "median_cpu_s": {name: timing.median(t) for name, t in cpu.items()},
        "cpu_ratio_to_equal": {name: timing.paired_ratio(t, cpu["equal"])
                               for name, t in cpu.items()},
        "min_wall_ratio_to_equal": {name: min(t) / min(times["equal"])
                                    for name, t in times.items()},
        "meta_weights_after": [float(x) for x in meta_weights.numpy()],
        "block_times_s": times,
        "block_cpu_s": cpu,
    }
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("block_")}, indent=1))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=1)
    return result


if __name__ == "__main__":
    main()
