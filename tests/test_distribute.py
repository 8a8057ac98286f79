"""tf.distribute: MirroredStrategy (2 logical CPUs) and MultiWorkerMirroredStrategy
(2 worker processes on localhost) reproduce one device's training.

Logical devices must be configured before TensorFlow initialises, so every
distributed run happens in a subprocess running `SCRIPT` (written to a temporary
folder). The model has no BatchNormalization (a VGG-like trunk, classification
heads), so one device and R replicas compute the same function; the labels are
partly missing, so the replicas see different label counts.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_mtl import distribute

SCRIPT = r'''
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf

def setup(logical_cpus):
    if logical_cpus:
        from keras_mtl import distribute
        distribute.set_logical_cpus(logical_cpus)

def vgg_trunk():
    import keras
    from keras import layers
    x = images = keras.Input((32, 32, 3))
    x = layers.Rescaling(1 / 255.0)(x)
    features = {}
    for width, level in ((8, None), (8, "P2"), (8, "P3"), (16, "P4"), (16, "P5")):
        x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
        if level:
            features[level] = x
    return keras.Model(images, features, name="vgg_like")

def dataset(batch_size=8, num=32):
    from keras_mtl.data import shapes
    data = shapes.make_dataset(num, image_size=32, batch_size=batch_size, seed=0,
                               tasks=["label", "objects"], drop_remainder=True)

    def targets(images, t):
        label = t["label"]
        index = tf.range(tf.shape(label)[0])
        label = tf.where(index % 3 == 0, -1, label)  # missing labels: counts differ by replica
        present = tf.reduce_max(tf.one_hot(t["objects"]["labels"], 3, dtype=tf.int32), axis=1)
        present = tf.where((index % 4 == 1)[:, None], -1, present)
        return images, {"label": label, "present": present}

    return data.map(targets)

def train(strategy, weighting, rep_grad=False, jit=False, epochs=2, steps=None, options=None):
    import keras
    import keras_mtl as mtl
    with strategy.scope():
        keras.utils.set_random_seed(0)
        tasks = [mtl.tasks.Classification("label", 3),
                 mtl.tasks.Classification("present", 3, multi_label=True)]
        kwargs = {"rep_grad": True} if rep_grad else {}
        kwargs.update(options or {})
        model = mtl.build_mtl(tasks, trunk=vgg_trunk(), weights=None, input_shape=(32, 32, 3),
                              weighting=mtl.weighting.get(weighting, **kwargs))
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.5), jit_compile=jit)
    history = model.fit(dataset(), epochs=epochs, steps_per_epoch=steps, verbose=0).history
    results = model.evaluate(dataset(), verbose=0, return_dict=True)
    return {
        "weights": [np.asarray(v) for v in model.get_weights()],
        "weighting": [np.asarray(v) for v in model.weighting.variables],
        "history": {k: [float(x) for x in v] for k, v in history.items()},
        "evaluate": {k: float(v) for k, v in results.items()},
        "jit_compile": bool(model.jit_compile),
        "replicas": strategy.num_replicas_in_sync,
    }

def compare(a, b):
    return {
        "weights": max(float(np.max(np.abs(x - y))) for x, y in zip(a["weights"], b["weights"])),
        "weighting": max(float(np.max(np.abs(x - y), initial=0.0))
                         for x, y in zip(a["weighting"], b["weighting"])),
        "history": max(abs(x - y) for k in a["history"]
                       for x, y in zip(a["history"][k], b["history"][k])),
        "evaluate": max(abs(a["evaluate"][k] - b["evaluate"][k]) for k in a["evaluate"]),
        "keys": sorted(a["history"]) == sorted(b["history"]),
        "jit_compile": b["jit_compile"], "replicas": b["replicas"],
    }

def save(path, result):
    np.savez(path, *result["weights"])
    with open(path + ".json", "w") as f:
        json.dump({k: v for k, v in result.items() if k != "weights"}, f,
                  default=lambda x: np.asarray(x).tolist())

if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "mirrored":  # argv[2]: JSON list of [weighting, rep_grad, jit(, options)]
        setup(2)
        from keras_mtl import distribute
        out = {}
        # One strategy for the process: collective keys of a second MirroredStrategy
        # can collide with the first one's (shape mismatch in a collective).
        strategy = distribute.make_strategy("mirrored")
        for weighting, rep_grad, jit, *options in json.loads(sys.argv[2]):
            options = options[0] if options else {}
            two = train(strategy, weighting, rep_grad, jit, options=options)
            one = train(tf.distribute.get_strategy(), weighting, rep_grad, jit, options=options)
            key = "/".join([weighting, str(rep_grad), str(jit)] +
                           [f"{k}={v}" for k, v in sorted(options.items())])
            out[key] = compare(one, two)
        print("RESULT " + json.dumps(out))
    elif mode == "worker":  # argv[2]: weighting, argv[3]: output path
        from keras_mtl import distribute
        strategy = distribute.make_strategy("multi_worker")
        result = train(strategy, sys.argv[2], rep_grad=False, jit=False)
        if distribute.is_chief(strategy):
            save(sys.argv[3], result)
        print("WORKER DONE", strategy.num_replicas_in_sync)
    elif mode == "single":
        save(sys.argv[3], train(tf.distribute.get_strategy(), sys.argv[2]))
'''

TOLERANCE = 1e-5


def _write_script(tmp_path):
    path = tmp_path / "distributed_run.py"
    path.write_text(SCRIPT)
    return str(path)


def _run(args, timeout, env=None):
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                            timeout=timeout, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _mirrored(tmp_path, cases, timeout=600):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}  # to see XLA's "Compiled cluster" line
    result = _run([_write_script(tmp_path), "mirrored", json.dumps(cases)], timeout, env)
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), result.stderr


def _assert_same(diff):
    assert diff["replicas"] == 2
    assert diff["keys"]
    assert diff["weights"] <= TOLERANCE, diff
    assert diff["weighting"] <= TOLERANCE, diff  # FAMO logits, GradVac EMA, ...
    assert diff["history"] <= TOLERANCE, diff  # losses, accuracy, AUC, weight/<task>
    assert diff["evaluate"] <= TOLERANCE, diff


def test_mirrored_strategy_on_two_logical_cpus_matches_one_device(tmp_path):
    # A stateful gradient-based weighting under XLA (stateful loss-based ones, like famo,
    # are in the slow test): the distributed run goes first, so XLA's one-time log line
    # comes from the replicas.
    cases = [["gradvac", False, True]]
    results, stderr = _mirrored(tmp_path, cases)
    for key, diff in results.items():
        _assert_same(diff)
    assert results["gradvac/False/True"]["jit_compile"]  # honoured under the strategy
    assert "Compiled cluster using XLA" in stderr


@pytest.mark.slow
def test_mirrored_strategy_matches_one_device_for_more_weightings(tmp_path):
    cases = [["famo", False, False], ["uncertainty", False, False], ["dwa", False, False],
             ["pcgrad", False, False], ["mgda", True, False], ["rlw", False, True],
             ["imtl", False, False]]
    results, _ = _mirrored(tmp_path, cases, timeout=1200)
    for key, diff in results.items():
        _assert_same(diff)


@pytest.mark.slow
def test_mirrored_strategy_matches_one_device_with_task_chunks(tmp_path):
    # The memory-budgeted step (keras_mtl.training.task_chunks): the Gramian one task at a
    # time, for parameter and shared-feature gradients, with and without XLA.
    chunked = {"task_chunk_size": 1}
    cases = [["mgda", False, False, chunked], ["imtl", True, True, chunked],
             ["pcgrad", False, False, chunked]]
    results, _ = _mirrored(tmp_path, cases, timeout=1200)
    assert len(results) == 3
    for key, diff in results.items():
        assert key.endswith("task_chunk_size=1"), key
        _assert_same(diff)


def test_logical_cpus_error_after_initialisation():
    import tensorflow as tf

    tf.constant(1.0)  # devices initialised
    current = len(tf.config.list_logical_devices("CPU"))
    with pytest.raises(RuntimeError, match="before any TensorFlow op"):
        distribute.set_logical_cpus(current + 1)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        if "TF_CONFIG" not in os.environ:
            distribute.make_strategy("multi_worker")
        else:  # pragma: no cover
            raise ValueError("TF_CONFIG")
    with pytest.raises(ValueError, match="Unknown strategy"):
        distribute.make_strategy("tpu")


def test_local_tf_config():
    ports = distribute.free_ports(2)
    assert len(set(ports)) == 2
    config = json.loads(distribute.local_tf_config(ports, 1))
    assert config["cluster"]["worker"] == [f"127.0.0.1:{port}" for port in ports]
    assert config["task"] == {"type": "worker", "index": 1}


@pytest.mark.slow
def test_multi_worker_mirrored_strategy_two_local_workers_match_one_device(tmp_path):
    script = _write_script(tmp_path)
    ports = distribute.free_ports(2)
    output = str(tmp_path / "chief.npz")
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": distribute.local_tf_config(ports, index)}
        workers.append(subprocess.Popen(
            [sys.executable, script, "worker", "famo", output], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [worker.communicate(timeout=420) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
        assert "WORKER DONE 2" in stdout
    reference = str(tmp_path / "single.npz")
    _run([script, "single", "famo", reference], timeout=300)
    one, two = np.load(reference), np.load(output)
    assert max(np.max(np.abs(one[k] - two[k])) for k in one.files) <= TOLERANCE
    one_logs = json.load(open(reference + ".json"))
    two_logs = json.load(open(output + ".json"))
    for key, values in one_logs["history"].items():
        np.testing.assert_allclose(two_logs["history"][key], values, atol=TOLERANCE)
    for got, expected in zip(two_logs["weighting"], one_logs["weighting"]):
        np.testing.assert_allclose(got, expected, atol=TOLERANCE)
