import os
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

tfds = pytest.importorskip("tensorflow_datasets")

from keras_mtl.data import tfds_datasets  # noqa: E402
from keras_mtl.data.checks import check_batch  # noqa: E402

RECIPES = os.path.join(os.path.dirname(__file__), "..", "..", "recipes")


def _generator_dataset(examples, builder):
    signature = tf.nest.map_structure(
        lambda t: tf.TensorSpec(t.shape, t.dtype), builder.info.features.get_tensor_info())
    return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=signature)


def pets_examples(count=6):
    """Consistent pet examples: the head box is where the trimap's pet is."""
    examples = []
    for i in range(count):
        height, width = 40 + 4 * i, 60
        mask = np.full((height, width, 1), 2, np.uint8)  # 2 = background in TFDS
        mask[10:30, 20:50] = 1  # pet
        mask[9, 20:50] = 3  # border
        has_head = i < 4  # the test split has no head boxes: an empty BBox
        bbox = (np.array([10 / height, 20 / width, 30 / height, 50 / width], np.float32)
                if has_head else np.zeros(4, np.float32))
        examples.append({"image": np.full((height, width, 3), 10 * i, np.uint8), "label": i,
                         "species": i % 2, "file_name": f"pet_{i}.jpg",
                         "segmentation_mask": mask, "head_bbox": bbox})
    return examples


def objects_examples(count=4, num_classes=20, difficult_key="is_difficult"):
    """VOC/COCO-like examples with 0..count-1 objects each."""
    rng = np.random.default_rng(0)
    examples = []
    for i in range(count):
        n = i  # image 0 has no object
        y0 = rng.uniform(0, 0.5, n)
        x0 = rng.uniform(0, 0.5, n)
        bbox = np.stack([y0, x0, y0 + 0.4, x0 + 0.3], axis=-1).astype(np.float32).reshape(n, 4)
        objects = {"bbox": bbox, "label": (np.arange(n) * 7 % num_classes).astype(np.int64)}
        if difficult_key == "is_difficult":
            objects.update(is_difficult=np.arange(n) == 1, is_truncated=np.zeros(n, bool),
                           pose=np.zeros(n, np.int64))
            extra = {"labels": objects["label"], "labels_no_difficult": objects["label"]}
        else:
            objects.update(is_crowd=np.arange(n) == 1, area=np.ones(n, np.int64),
                           id=np.arange(n, dtype=np.int64))
            extra = {"image/id": np.int64(i)}
        examples.append({"image": np.full((50, 70, 3), 5 * i, np.uint8),
                         "image/filename": f"{i}.jpg", "objects": objects, **extra})
    return examples


def mock(examples):
    def as_dataset(builder, split, decoders=None, read_config=None, shuffle_files=False):
        return _generator_dataset(examples, builder)

    return tfds.testing.mock_data(num_examples=len(examples), as_dataset_fn=as_dataset)


def test_oxford_pets_targets_and_head_weights():
    with mock(pets_examples()):
        ds = tfds_datasets.load_oxford_pets("train", image_size=32, batch_size=6, shuffle=False)
        images, targets, weights = next(iter(ds))
    assert images.shape == (6, 32, 32, 3) and images.dtype == tf.uint8
    assert targets["breed"].numpy().tolist() == [0, 1, 2, 3, 4, 5]
    assert targets["species"].numpy().tolist() == [0, 1, 0, 1, 0, 1]
    # Box rows 10..30 of 40 px, columns 20..50 of 60 px -> xyxy pixels of a 32 px image.
    np.testing.assert_allclose(targets["head"]["boxes"][0, 0], [32 / 3, 8, 32 * 5 / 6, 24],
                               atol=1e-4)
    assert targets["head"]["labels"].numpy()[:, 0].tolist() == [0, 0, 0, 0, -1, -1]
    assert weights["head"].numpy().tolist() == [1, 1, 1, 1, 0, 0]
    trimap = targets["trimap"][0].numpy()
    assert trimap[16, 20] == 1 and trimap[2, 2] == 0 and set(np.unique(trimap)) == {0, 1, 2}
    check_batch((images, targets, weights), tfds_datasets.pets_tasks(), (32, 32, 3))


def test_voc_multi_hot_and_difficult_boxes():
    with mock(objects_examples()):
        ds = tfds_datasets.load_voc("2007", "validation", image_size=64, batch_size=4,
                                    max_boxes=5)
        images, targets, weights = next(iter(ds))
    labels = targets["objects"]["labels"].numpy()
    assert labels.shape == (4, 5)
    # image 3 has objects of classes 0, 7, 14; object 1 is difficult -> padding, kept last
    assert labels[3].tolist() == [0, 14, -1, -1, -1]
    assert labels[0].tolist() == [-1] * 5  # no object
    hot = targets["labels"].numpy()
    assert hot[3].nonzero()[0].tolist() == [0, 7, 14] and hot[0].sum() == 0
    boxes = targets["objects"]["boxes"].numpy()
    width, height = boxes[3, 0, 2] - boxes[3, 0, 0], boxes[3, 0, 3] - boxes[3, 0, 1]
    np.testing.assert_allclose([width, height], [0.3 * 64, 0.4 * 64], atol=1e-3)
    check_batch((images, targets, weights), tfds_datasets.voc_tasks(), (64, 64, 3))


def test_coco_crowd_boxes_become_padding_and_tasks_can_be_selected():
    with mock(objects_examples(num_classes=80, difficult_key="is_crowd")):
        ds = tfds_datasets.load_coco("validation", image_size=32, batch_size=4,
                                     tasks=["objects"])
        images, targets, weights = next(iter(ds))
    assert list(targets) == ["objects"] and list(weights) == ["objects"]
    assert targets["objects"]["labels"].shape == (4, 100)
    assert targets["objects"]["labels"].numpy()[2, :3].tolist() == [0, -1, -1]  # 2nd is crowd


def test_not_prepared_fails_fast_with_instructions(tmp_path):
    start = time.time()
    with pytest.raises(tfds_datasets.DataNotPreparedError, match="tfds build voc/2012"):
        tfds_datasets.load_voc("2012", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not prepared"):  # a FileNotFoundError too
        tfds_datasets.load_oxford_pets(data_dir=str(tmp_path), download=False)
    assert time.time() - start < 30  # no download retries
    with pytest.raises(ValueError, match="year"):
        tfds_datasets.load_voc("2010")
    with pytest.raises(ValueError, match="Unknown task"):
        tfds_datasets.load_oxford_pets(tasks=["tail"], data_dir=str(tmp_path))


@pytest.mark.slow
def test_quick_pets_recipe_runs_on_mocked_data(tmp_path, capsys):
    sys.path.insert(0, RECIPES)
    try:
        import oxford_pets as recipe
    finally:
        sys.path.remove(RECIPES)
    with mock(pets_examples(8)):
        results = recipe.main(["--quick", "--epochs", "1", "--output-dir", str(tmp_path),
                               "--data-dir", str(tmp_path / "tfds")])
    printed = capsys.readouterr().out
    assert "trimap" in printed and "efficiency" in printed
    assert set(results["metrics"]) == {"breed", "species", "head", "trimap"}
    assert os.path.getsize(tmp_path / "gallery.png") > 1000
    assert os.path.exists(tmp_path / "export" / "1" / "saved_model.pb")
    assert "parity with predict" in printed and "head_boxes" in printed
    assert results["export"]["failures"] == []
