"""The image-folder loader: mask PNGs, a labels CSV, letterboxing, bad data."""

import os

import numpy as np
import pytest
import tensorflow as tf

from keras_mtl.data import DataError, folder


def _png(path, array):
    tf.io.write_file(str(path), tf.io.encode_png(np.asarray(array)))


def _write_folder(root, suffix="_mask"):
    """photos/a.png (80x40, class 2 at x 10..30, y 5..25), b.png (40x40, class 1 at
    x 0..20), c.png (no mask); masks/; labels.csv. Returns the three paths."""
    photos, masks = root / "photos", root / "masks"
    photos.mkdir()
    masks.mkdir()
    image = np.zeros((40, 80, 3), "uint8")
    image[5:25, 10:30] = 200
    mask = np.zeros((40, 80, 1), "uint8")
    mask[5:25, 10:30] = 2
    _png(photos / "a.png", image)
    _png(masks / f"a{suffix}.png", mask)
    square = np.zeros((40, 40, 1), "uint8")
    square[:, :20] = 1
    _png(photos / "b.png", np.zeros((40, 40, 3), "uint8"))
    _png(masks / f"b{suffix}.png", square)
    _png(photos / "c.png", np.zeros((20, 20, 3), "uint8"))
    csv = root / "labels.csv"
    csv.write_text("file_name,weather\na.png,sun\nb.png,\nc,rain\n")  # c: by stem
    return str(photos), str(masks), str(csv)


def _first_batch(**kwargs):
    ds, info = folder.load_image_folder(image_size=32, batch_size=8, with_info=True, **kwargs)
    images, targets = next(iter(ds))
    return images.numpy(), {k: v.numpy() for k, v in targets.items()}, info


def _span(mask):
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_masks_and_csv_labels_become_tasks_with_aligned_letterboxed_masks(tmp_path):
    photos, masks, csv = _write_folder(tmp_path)
    images, targets, info = _first_batch(images_dir=photos, masks_dir=masks, labels_csv=csv,
                                         mask_suffix="_mask")
    assert info.task_names == ["weather", "mask"]
    assert info.class_names("weather") == ("rain", "sun")
    assert info.class_names("mask") == ("0", "1", "2")  # up to the largest id found
    assert [t.num_classes for t in info.make_tasks()] == [2, 3]
    np.testing.assert_array_equal(targets["weather"], [1, -1, 0])  # a sun, b empty, c rain
    # a.png, 80x40 -> 32x16 with 8 border rows above: scale 0.4.
    assert _span(targets["mask"][0] == 2) == [4, 10, 12, 18]
    assert _span(images[0, ..., 0] > 100) == [4, 10, 12, 18]
    assert (targets["mask"][0, :8] == 255).all() and (targets["mask"][0, 8:24] != 255).all()
    assert _span(targets["mask"][1] == 1) == [0, 0, 16, 32]  # square: no border
    assert (targets["mask"][2] == 255).all()  # c.png has no mask: unlabelled


def test_class_names_split_and_labels_only(tmp_path):
    photos, masks, csv = _write_folder(tmp_path, suffix="")
    _, targets, info = _first_batch(images_dir=photos, masks_dir=masks, tasks=["mask"],
                                    class_names=("ground", "tree", "house", "sky"),
                                    resize="stretch")
    assert info.task_names == ["mask"] and info.make_tasks()[0].num_classes == 4
    assert _span(targets["mask"][0] == 2) == [4, 4, 12, 20]  # stretched: x 0.4, y 0.8
    _, targets, info = _first_batch(images_dir=photos, labels_csv=csv, split="train",
                                    val_every=3)
    assert info.task_names == ["weather"] and info.num_examples == 2  # c.png validates
    np.testing.assert_array_equal(targets["weather"], [1, -1])
    with pytest.raises(ValueError, match="needs masks_dir and/or labels_csv"):
        folder.load_image_folder(photos)


def _colour_mask(root):
    _png(root / "masks" / "a_mask.png", np.stack([np.zeros((40, 80)), np.ones((40, 80)),
                                                  np.zeros((40, 80))], -1).astype("uint8"))


BAD = {
    "missing image": (lambda root: (root / "labels.csv").write_text("file_name,w\ngone.png,x\n"),
                      r"Image '.*gone\.png' \(listed in '.*labels\.csv'\) does not exist"),
    "corrupt image": (lambda root: (root / "photos" / "a.png").write_bytes(b"\x89PNG broken"),
                      r"Cannot read image '.*a\.png': it is corrupt"),
    "mask size": (lambda root: _png(root / "masks" / "a_mask.png", np.zeros((40, 40, 1),
                                                                             "uint8")),
                  r"Mask '.*a_mask\.png' is 40x40 pixels \(WxH\) but its image '.*a\.png' is "
                  r"80x40"),
    "colour mask": (_colour_mask, r"Mask '.*a_mask\.png' is a colour image"),
    "corrupt mask": (lambda root: (root / "masks" / "a_mask.png").write_bytes(b"GIF89a"),
                     r"Mask '.*a_mask\.png' is not a PNG file"),
    "orphan mask": (lambda root: _png(root / "masks" / "z_mask.png", np.zeros((4, 4, 1),
                                                                              "uint8")),
                    r"Mask '.*z_mask\.png' has no image"),
    "empty csv": (lambda root: (root / "labels.csv").write_text(""),
                  r"Labels CSV '.*labels\.csv' is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_data_raises_a_data_error_naming_the_file(tmp_path, case):
    photos, masks, csv = _write_folder(tmp_path)
    spoil, message = BAD[case]
    spoil(tmp_path)
    with pytest.raises(DataError, match=message):
        folder.load_image_folder(photos, masks_dir=masks, labels_csv=csv, mask_suffix="_mask")


def test_class_ids_out_of_range_and_an_empty_folder_are_named(tmp_path):
    photos, masks, _ = _write_folder(tmp_path)
    with pytest.raises(DataError, match=r"Mask '.*a_mask\.png' has class id 2; ids must be "
                                        r"below 2 or be 255"):
        folder.load_image_folder(photos, masks_dir=masks, mask_suffix="_mask",
                                 class_names=("ground", "tree"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(DataError, match=r"Images folder '.*empty' holds no"):
        folder.load_image_folder(str(tmp_path / "empty"), masks_dir=masks)
