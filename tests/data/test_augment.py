import numpy as np
import pytest
import tensorflow as tf

from keras_mtl import tasks
from keras_mtl.data.augment import JointAugmentation

SIZE = 64


def rectangles(batch=8, per_image=3, max_boxes=5, seed=0):
    """Images whose instance i is a filled rectangle = box i; mask value i + 1."""
    rng = np.random.default_rng(seed)
    images = np.zeros((batch, SIZE, SIZE, 3), np.uint8)
    masks = np.zeros((batch, SIZE, SIZE), np.uint8)
    boxes = np.zeros((batch, max_boxes, 4), np.float32)
    labels = np.full((batch, max_boxes), -1, np.int32)
    for b in range(batch):
        for i in range(per_image):  # three disjoint vertical bands, so no overlap
            x0 = int(rng.integers(i * 21, i * 21 + 8))
            y0 = int(rng.integers(0, SIZE - 16))
            w, h = int(rng.integers(6, 12)), int(rng.integers(8, 16))
            boxes[b, i] = [x0, y0, x0 + w, y0 + h]
            labels[b, i] = i % 2
            masks[b, y0:y0 + h, x0:x0 + w] = i + 1
            images[b, y0:y0 + h, x0:x0 + w] = 70 * (i + 1)
    targets = {"objects": {"boxes": boxes, "labels": labels}, "mask": masks,
               "label": np.arange(batch, dtype=np.int32)}
    return images, targets


def tight_box(mask, value):
    ys, xs = np.nonzero(mask == value)
    if not len(ys):
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def test_flip_moves_image_box_and_mask_together():
    image = np.zeros((1, SIZE, SIZE, 3), np.uint8)
    image[0, 10:30, 4:20] = 200  # the object sits on the left
    mask = (image[..., 0] > 0).astype(np.int32)
    targets = {"objects": {"boxes": np.array([[[4., 10., 20., 30.]]], np.float32),
                           "labels": np.array([[0]], np.int32)}, "mask": mask}
    augmentation = JointAugmentation(
        detection="objects", segmentation="mask", scale_range=(1, 1), translate=0.0,
        brightness=0.0, contrast=0.0, saturation=0.0, seed=1)
    seen = set()
    for _ in range(12):  # each call flips with probability 1/2
        out_images, out = augmentation(image, targets)
        box = out["objects"]["boxes"][0, 0].numpy()
        flipped = box[0] > SIZE / 2
        expected = [SIZE - 20, 10, SIZE - 4, 30] if flipped else [4, 10, 20, 30]
        np.testing.assert_allclose(box, expected, atol=1e-4)
        np.testing.assert_array_equal(tight_box(out["mask"][0].numpy(), 1), expected)
        np.testing.assert_array_equal(tight_box(out_images[0, ..., 0].numpy(), 200), expected)
        assert out["objects"]["labels"].numpy().tolist() == [[0]]
        seen.add(bool(flipped))
    assert seen == {True, False}


@pytest.mark.parametrize("scale_range, translate", [((0.6, 1.6), 0.2), ((1.3, 1.6), 0.0)])
def test_every_kept_box_still_bounds_its_mask_pixels(scale_range, translate):
    images, targets = rectangles(batch=16, seed=3)
    augmentation = JointAugmentation(detection="objects", segmentation="mask",
                                     scale_range=scale_range, translate=translate,
                                     min_box_size=1.0, seed=5)
    moved = 0
    for _ in range(2):
        out_images, out = augmentation(images, targets)
        boxes = out["objects"]["boxes"].numpy()
        labels = out["objects"]["labels"].numpy()
        masks = out["mask"].numpy()
        np.testing.assert_array_equal(out["label"], targets["label"])  # passes through
        for b in range(len(images)):
            for i in range(boxes.shape[1]):
                pixels = tight_box(masks[b], i + 1)
                if labels[b, i] < 0:
                    assert (boxes[b, i] == 0).all()
                    # A dropped instance is gone, or a sliver under min_box_size + rounding.
                    if pixels is not None:
                        assert min(pixels[2] - pixels[0], pixels[3] - pixels[1]) <= 2
                    continue
                assert labels[b, i] == targets["objects"]["labels"][b, i]
                assert pixels is not None, (b, i, boxes[b, i])
                np.testing.assert_allclose(boxes[b, i], pixels, atol=1.5)
                moved += int(np.abs(boxes[b, i] - targets["objects"]["boxes"][b, i]).max() > 2)
    assert moved > 10  # the transform really moved boxes


def test_dtypes_fill_values_and_pass_through_of_sample_weights():
    images, targets = rectangles(batch=4)
    weights = {"mask": np.ones(4, np.float32)}
    augmentation = JointAugmentation(detection="objects", segmentation="mask",
                                     scale_range=(0.6, 0.6), translate=0.0, brightness=0.0,
                                     contrast=0.0, saturation=0.0, mask_fill_value=255)
    out_images, out, out_weights = augmentation(images, targets, weights)
    assert out_images.dtype == tf.float32 and out["mask"].dtype == tf.uint8
    assert out["objects"]["labels"].dtype == tf.int32
    masks = out["mask"].numpy()
    # Zoomed out to 0.6: the border (outside the old image) is unlabelled, the centre is not.
    assert (masks[:, 0, :] == 255).all() and (masks[:, :, -1] == 255).all()
    assert (masks[:, 20:44, 20:44] != 255).all()
    assert float(tf.reduce_max(out_images[:, :3])) == 0.0  # fill_value
    assert out_weights is weights


def test_works_in_a_tf_data_map_on_single_examples_and_from_tasks():
    images, targets = rectangles(batch=6)
    task_list = [tasks.Classification("label", 6), tasks.Detection("objects", 2),
                 tasks.Segmentation("mask", 4)]
    augmentation = JointAugmentation.from_tasks(task_list, seed=0)
    assert augmentation.detection == ("objects",) and augmentation.segmentation == ("mask",)
    ds = tf.data.Dataset.from_tensor_slices((images, targets)).map(augmentation)
    image, target = next(iter(ds))
    assert image.shape == (SIZE, SIZE, 3) and target["mask"].shape == (SIZE, SIZE)
    assert target["objects"]["boxes"].shape == (5, 4)
    with pytest.raises(ValueError, match="scale_range"):
        JointAugmentation(scale_range=(0.4, 1.0))
    with pytest.raises(ValueError, match="have no"):
        JointAugmentation(detection="boxes")(images, targets)
