import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl as mtl
from keras_mtl import tasks
from keras_mtl.data import shapes
from keras_mtl.data.checks import check_batch
from keras_mtl.data.mixing import complete_targets, mix_datasets, unlabelled_target

TASKS = [tasks.Classification("label", 3), tasks.Detection("objects", 3),
         tasks.Segmentation("mask", 4)]


def test_unlabelled_targets_have_the_task_shapes_and_values():
    label = unlabelled_target(TASKS[0], batch_size=2)
    assert label.numpy().tolist() == [-1, -1]
    multi = unlabelled_target(tasks.Classification("tags", 4, multi_label=True))
    assert multi.numpy().tolist() == [-1, -1, -1, -1]
    boxes = unlabelled_target(TASKS[1], max_boxes=3, batch_size=2)
    assert boxes["boxes"].shape == (2, 3, 4) and (boxes["labels"].numpy() == -1).all()
    mask = unlabelled_target(tasks.Segmentation("m", 3, ignore_index=99), image_shape=(4, 5, 3),
                             dtype="uint8")
    assert mask.shape == (4, 5) and mask.dtype == tf.uint8 and (mask.numpy() == 99).all()
    with pytest.raises(ValueError, match="image_shape"):
        unlabelled_target(TASKS[2])


def _sources():
    masks_only = shapes.make_dataset(40, image_size=32, batch_size=4, tasks=["mask"], seed=0)
    boxes_only = shapes.make_dataset(40, image_size=32, batch_size=4, tasks=["objects"], seed=1)
    labels_only = tf.data.Dataset.from_tensor_slices(
        (np.full((40, 32, 32, 3), 9, np.uint8), {"label": np.full(40, 2, np.int64)},
         {"label": np.full(40, 0.5, np.float32)}))
    return masks_only, boxes_only, labels_only


def test_mixed_batches_have_every_task_with_missing_labels_masked():
    mixed = mix_datasets(list(_sources()), TASKS, weights=[1, 1, 2], batch_size=16, seed=0)
    counts = np.zeros(3)
    for images, targets, weights in mixed:
        assert sorted(targets) == sorted(weights) == ["label", "mask", "objects"]
        check_batch((images, targets, weights), TASKS, (32, 32, 3))  # the model accepts it
        w = {name: weights[name].numpy() for name in weights}
        from_masks, from_boxes, from_labels = w["mask"] > 0, w["objects"] > 0, w["label"] > 0
        # each example is labelled for exactly one task, and only that one
        assert ((from_masks.astype(int) + from_boxes + from_labels) == 1).all()
        np.testing.assert_array_equal(w["label"][from_labels], 0.5)  # the source's own weight
        assert (targets["label"].numpy()[~from_labels] == -1).all()
        assert (targets["label"].numpy()[from_labels] == 2).all()
        assert (targets["mask"].numpy()[~from_masks] == 255).all()
        assert (targets["mask"].numpy()[from_masks] < 4).all()
        labels = targets["objects"]["labels"].numpy()
        assert (labels[~from_boxes] == -1).all() and (labels[from_boxes].max(axis=1) >= 0).all()
        counts += [from_masks.sum(), from_boxes.sum(), from_labels.sum()]
    assert counts.tolist() == [40, 40, 40]  # all examples of every source, nothing twice


def test_sampling_weights_set_the_mix():
    masks_only, boxes_only, _ = _sources()
    mixed = mix_datasets([masks_only.repeat(), boxes_only.repeat()], TASKS, weights=[0.8, 0.2],
                         batch_size=50, seed=1)
    share = np.mean([float(np.mean(w["mask"].numpy() > 0)) for _, _, w in mixed.take(8)])
    assert 0.72 < share < 0.88  # 400 draws: 0.8 +- 4 standard deviations
    assert mix_datasets([masks_only, boxes_only], TASKS, seed=1).element_spec[0].shape.rank == 3


def test_complete_targets_pads_boxes_and_squeezes_masks():
    ds = tf.data.Dataset.from_tensor_slices(
        (np.zeros((2, 32, 32, 3), np.float32),
         {"objects": {"boxes": np.ones((2, 2, 4), np.float32), "labels": np.zeros((2, 2), np.int32)},
          "mask": np.ones((2, 32, 32, 1), np.uint8)}))
    image, targets, weights = next(iter(complete_targets(ds, TASKS, max_boxes=6)))
    assert targets["objects"]["boxes"].shape == (6, 4)
    assert targets["objects"]["labels"].numpy().tolist() == [0, 0, -1, -1, -1, -1]
    assert targets["mask"].shape == (32, 32) and targets["label"].numpy() == -1
    assert {k: float(v) for k, v in weights.items()} == {"label": 0.0, "objects": 1.0, "mask": 1.0}


def test_errors_name_the_problem():
    masks_only, _, _ = _sources()
    other_size = shapes.make_dataset(8, image_size=64, tasks=["mask"])
    with pytest.raises(ValueError, match="one fixed size"):
        mix_datasets([masks_only, other_size], TASKS)
    with pytest.raises(ValueError, match="not tasks"):
        mix_datasets([masks_only], TASKS[:1])
    with pytest.raises(ValueError, match="weights must be 2"):
        mix_datasets([masks_only, masks_only], TASKS, weights=[1.0])


def test_a_model_trains_on_a_mixed_stream_without_nan():
    masks_only, boxes_only, labels_only = _sources()
    mixed = mix_datasets([masks_only, boxes_only, labels_only], TASKS, batch_size=8, seed=0)
    model = mtl.build_mtl([type(t).from_config(t.get_config()) for t in TASKS],
                          trunk="micro_resnet", weights=None, input_shape=(32, 32, 3))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(mixed.take(3), epochs=1, verbose=0)
    for key in ("loss", "label_loss", "objects_loss", "mask_loss"):
        assert np.isfinite(history.history[key][-1]), key
