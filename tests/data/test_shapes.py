"""Tests for keras_mtl.data.shapes, the synthetic multi-task data set."""

import numpy as np
import pytest

from keras_mtl.data import shapes


def _numpy(index, image_size=32, seed=0):
    image, targets = shapes.make_example(index, image_size=image_size, seed=seed)
    objects = targets["objects"]
    return (image.numpy(), int(targets["label"]), objects["boxes"].numpy(),
            objects["labels"].numpy(), targets["mask"].numpy())


def test_same_seed_and_index_give_identical_examples():
    a, b = _numpy(3, seed=7), _numpy(3, seed=7)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_different_index_or_seed_gives_different_image():
    base = _numpy(3, seed=7)[0]
    assert not np.array_equal(base, _numpy(4, seed=7)[0])
    assert not np.array_equal(base, _numpy(3, seed=8)[0])


@pytest.mark.parametrize("image_size", [32, 48])
def test_dtypes_and_shapes(image_size):
    image, targets = shapes.make_example(0, image_size=image_size)
    assert image.dtype == "uint8" and image.shape == (image_size, image_size, 3)
    assert targets["label"].dtype == "int32" and targets["label"].shape == ()
    assert targets["objects"]["boxes"].dtype == "float32"
    assert targets["objects"]["boxes"].shape == (shapes.MAX_SHAPES, 4)
    assert targets["objects"]["labels"].dtype == "int32"
    assert targets["objects"]["labels"].shape == (shapes.MAX_SHAPES,)
    assert targets["mask"].dtype == "int32" and targets["mask"].shape == (image_size, image_size)
    assert set(targets) == set(shapes.TASK_NAMES.values())


def test_too_small_image_raises():
    with pytest.raises(ValueError, match="image_size"):
        shapes.make_example(0, image_size=8)


def _pairwise_iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])
    return inter / (area(a) + area(b) - inter)


@pytest.mark.parametrize("image_size", [32, 48])
def test_targets_are_consistent(image_size):
    counts = set()
    for index in range(40):
        image, label, boxes, labels, mask = _numpy(index, image_size=image_size)
        real = labels >= 0
        n = int(real.sum())
        counts.add(n)
        assert 1 <= n <= shapes.MAX_SHAPES
        assert real[:n].all() and not real[n:].any(), "padding must come last"
        np.testing.assert_array_equal(boxes[n:], 0.0)
        assert ((labels[:n] >= 0) & (labels[:n] < shapes.NUM_CLASSES)).all()
        assert mask.min() >= 0 and mask.max() < shapes.NUM_SEGMENTATION_CLASSES
        covered = np.zeros_like(mask, dtype=bool)
        for box, cls in zip(boxes[:n], labels[:n]):
            x0, y0, x1, y1 = box.astype(int)
            np.testing.assert_array_equal(box, [x0, y0, x1, y1])  # whole pixels
            assert 0 <= x0 < x1 <= image_size and 0 <= y0 < y1 <= image_size
            inside = mask[y0:y1, x0:x1] == 1 + cls
            # Tight: the shape touches every edge of its box.
            assert inside[0].any() and inside[-1].any()
            assert inside[:, 0].any() and inside[:, -1].any()
            covered[y0:y1, x0:x1] |= inside
        # Every shape pixel lies in a box with the matching label.
        np.testing.assert_array_equal(covered, mask > 0)
        for i in range(n):
            for j in range(i + 1, n):
                assert _pairwise_iou(boxes[i], boxes[j]) == 0.0
        # The classification label is the class of (one of) the largest boxes.
        areas = (boxes[:n, 2] - boxes[:n, 0]) * (boxes[:n, 3] - boxes[:n, 1])
        assert areas[labels[:n] == label].max() == areas.max()
        # Shapes are bright against a dark background.
        assert image[mask > 0].max(axis=-1).mean() > image[mask == 0].max(axis=-1).mean() + 80
    assert counts == {1, 2, 3, 4}


def test_labels_cover_all_classes():
    labels = [_numpy(i)[1] for i in range(60)]
    assert set(labels) == {0, 1, 2}


def test_make_dataset_batches():
    ds = shapes.make_dataset(5, image_size=32, batch_size=2)
    batches = list(ds)
    assert len(batches) == 3
    images, targets = batches[0]
    assert images.shape == (2, 32, 32, 3) and images.dtype == "uint8"
    assert targets["label"].shape == (2,)
    assert targets["objects"]["boxes"].shape == (2, shapes.MAX_SHAPES, 4)
    assert targets["objects"]["labels"].shape == (2, shapes.MAX_SHAPES)
    assert targets["mask"].shape == (2, 32, 32)
    # Example i of the data set is make_example(i).
    np.testing.assert_array_equal(images[1].numpy(), _numpy(1)[0])
    assert len(list(shapes.make_dataset(5, image_size=32, batch_size=2, drop_remainder=True))) == 2


def test_make_dataset_shuffle_and_repeat():
    ds = shapes.make_dataset(6, image_size=32, batch_size=6, shuffle=True, repeat=True, seed=1)
    first, second = [batch[1]["label"].numpy() for batch, _ in zip(ds, range(2))]
    plain = next(iter(shapes.make_dataset(6, image_size=32, batch_size=6, seed=1)))[1]["label"]
    # Same multiset of examples each epoch.
    np.testing.assert_array_equal(np.sort(first), np.sort(plain.numpy()))
    np.testing.assert_array_equal(np.sort(second), np.sort(plain.numpy()))


def test_make_dataset_tasks_subset():
    images, targets = next(iter(shapes.make_dataset(4, image_size=32, batch_size=4, tasks=["mask"])))
    assert list(targets) == ["mask"]
    assert targets["mask"].shape == (4, 32, 32)


def test_make_dataset_unknown_task_raises():
    with pytest.raises(ValueError, match="bogus") as info:
        shapes.make_dataset(4, tasks=["mask", "bogus"])
    assert "label" in str(info.value)


def test_make_tasks_names_and_classes():
    from keras_mtl.data import shapes as shapes_lib

    full = shapes_lib.make_tasks()
    assert [task.name for task in full] == ["label", "objects", "mask"]
    assert [type(task).__name__ for task in full] == ["Classification", "Detection",
                                                      "Segmentation"]
    assert full[2].num_classes == shapes_lib.NUM_SEGMENTATION_CLASSES
    assert [task.name for task in shapes_lib.make_tasks(with_detection=False)] == ["label", "mask"]


def test_segmentation_options_reach_the_mask_task_of_tasks_and_factory():
    from keras_mtl.data import shapes as shapes_lib

    assert shapes_lib.make_tasks()[2].head_convs == 2  # the task's own default
    mask = shapes_lib.make_tasks(segmentation_kwargs={"head_convs": 0})[2]
    assert mask.name == "mask" and mask.head_convs == 0
    data = shapes_lib.leaderboard_factory(image_size=32, batch_size=4,
                                          segmentation_kwargs={"head_convs": 1})(0)
    assert [task.head_convs for task in data.tasks if task.name == "mask"] == [1]
