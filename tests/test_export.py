import subprocess
import sys

import numpy as np

import keras_mtl as mtl
from keras_mtl.export import check_export


def test_export_serves_decoded_outputs_without_keras_mtl(tmp_path):
    model = mtl.build_mtl([mtl.tasks.Classification("label", 3), mtl.tasks.Segmentation("mask", 4)],
                          trunk="micro_resnet", weights=None, input_shape=(32, 32, 3))
    path = str(tmp_path / "export" / "1")
    model.export(path, verbose=False)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype("uint8")
    differences = check_export(model, path, images)
    assert set(differences) == {"label", "mask"}
    np.save(tmp_path / "images.npy", images)
    expected = model.predict(images, verbose=0)
    np.save(tmp_path / "expected_mask.npy", expected["mask"])
    script = f"""
import sys, numpy as np, tensorflow as tf
served = tf.saved_model.load({path!r})
images = np.load({str(tmp_path / 'images.npy')!r})
for batch in (images[:1], images):
    out = served.signatures["serve_uint8"](images=tf.constant(batch))
    assert out["label"].shape == (len(batch), 3), out["label"].shape
out = served.signatures["serving_default"](images=tf.constant(images, tf.float32))
np.testing.assert_array_equal(out["mask"].numpy(), np.load({str(tmp_path / 'expected_mask.npy')!r}))
assert "keras_mtl" not in sys.modules
print("served", sorted(out))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "served ['label', 'mask']" in result.stdout
