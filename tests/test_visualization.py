import numpy as np
import pytest

pytest.importorskip("matplotlib")

from keras_mtl.data import shapes  # noqa: E402
from keras_mtl.visualization import save_prediction_png  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_saves_image_with_boxes_scores_and_mask(tmp_path):
    image, targets = shapes.make_example(0, image_size=64)
    path = save_prediction_png(
        str(tmp_path / "prediction.png"), image, targets["objects"]["boxes"],
        targets["objects"]["labels"], scores=np.array([0.9, 0.8, 0.7, 0.0]),
        mask=targets["mask"], class_names=shapes.CLASS_NAMES,
        mask_class_names=("background",) + shapes.CLASS_NAMES, title="shapes #0")
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE


def test_other_formats_padding_and_no_boxes(tmp_path):
    image = np.random.default_rng(0).uniform(0, 1, (32, 48, 3)).astype("float32")
    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]])  # rel_yxyx, then padding
    path = save_prediction_png(str(tmp_path / "a.png"), image, boxes, np.array([0, -1]),
                               scores=np.array([0.2, 0.0]), bounding_box_format="rel_yxyx",
                               num_detections=1, score_threshold=0.5)
    assert (tmp_path / "a.png").stat().st_size > 0 and path.endswith("a.png")
    save_prediction_png(str(tmp_path / "b.png"), image * 255.0)  # image only
    with pytest.raises(ValueError, match="mask must be"):
        save_prediction_png(str(tmp_path / "c.png"), image, mask=np.zeros((4, 4), int))
