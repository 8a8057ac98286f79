"""A model built inside a 2-replica MirroredStrategy synchronises its BatchNorm layers by
default and matches one device after two SGD steps; `sync_batch_norm=False` keeps
per-replica statistics (and differs). Runs in a subprocess: logical CPUs must be set up
before TensorFlow initialises."""

import json
import subprocess
import sys

SCRIPT = r'''
import json, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from keras_mtl import distribute
distribute.set_logical_cpus(2)
import keras
import numpy as np
import tensorflow as tf
import keras_mtl as mtl
from keras_mtl import compat
from keras_mtl.data import shapes

def train(strategy, **kwargs):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        tasks = [mtl.tasks.Classification("label", 3), mtl.tasks.Segmentation("mask", 4)]
        model = mtl.build_mtl(tasks, trunk="micro_resnet", weights=None,
                              input_shape=(32, 32, 3), weighting="equal", **kwargs)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
    data = shapes.make_dataset(16, image_size=32, batch_size=8, seed=0, drop_remainder=True,
                               tasks=["label", "mask"])
    model.fit(data, epochs=1, verbose=0)  # two steps
    bn = [layer for layer in compat.all_sublayers(model)
          if isinstance(layer, keras.layers.BatchNormalization)]
    return model, [np.asarray(v) for v in model.get_weights()], bn

strategy = distribute.make_strategy("mirrored")
_, one, _ = train(tf.distribute.get_strategy())
default, two, bn_default = train(strategy)
off, two_off, bn_off = train(strategy, sync_batch_norm=False)
diff = lambda a, b: max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
restored = mtl.MultiTaskModel.from_config(off.get_config())
print("RESULT " + json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "default": diff(one, two), "off": diff(one, two_off),
    "bn_layers": len(bn_default),
    "synchronized_default": all(layer.synchronized for layer in bn_default),
    "synchronized_off": any(layer.synchronized for layer in bn_off),
    "config_off": off.get_config()["sync_batch_norm"], "restored": restored.sync_batch_norm,
}))
'''


def test_batch_norm_is_synchronised_by_default_under_two_replicas(tmp_path):
    script = tmp_path / "sync_batch_norm.py"
    script.write_text(SCRIPT)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    measured = json.loads(line[len("RESULT "):])
    assert measured["replicas"] == 2
    assert measured["bn_layers"] > 0  # trunk and heads have BatchNorm
    assert measured["synchronized_default"] and not measured["synchronized_off"]
    # One device's weights up to float32 rounding: 3.2e-6 measured (a conv kernel of the
    # trunk's stem; synchronised moments are E[x^2] - E[x]^2), against 0.75 per replica.
    assert measured["default"] <= 1e-5, measured
    assert measured["off"] > 1e-4, measured  # per-replica statistics
    assert measured["config_off"] is False and measured["restored"] is False
