"""Writes a tiny COCO-format sample from Penn-Fudan photos (the one shipped in `samples/`).

    python -m keras_mtl.data.samples.build_pennfudan_coco \\
        --source ../shared/data/PennFudanPed --output keras_mtl/data/samples/pennfudan_coco

Each chosen photo is scaled down to `max_side` pixels (JPEG) and described
the way a labelling tool exports it:

    OUTPUT/images/NAME.jpg
    OUTPUT/annotations.json   images (with a "campus" field), one annotation per
                              pedestrian (bbox from Annotation/NAME.txt, RLE mask
                              from PedMasks/NAME_mask.png), category 1 "person"
    OUTPUT/labels.csv         file_name,campus (the same labels as a CSV)

Example:

```python
write_pennfudan_coco("../shared/data/PennFudanPed", "/tmp/sample")  # '/tmp/sample/annotations.json'
```
"""

import argparse
import json
import os

import numpy as np

# Five photos of each campus; validation (every fifth) gets one of each.
DEFAULT_NAMES = tuple([f"FudanPed{i:05d}" for i in range(1, 6)]
                      + [f"PennPed{i:05d}" for i in range(1, 6)])
CATEGORY = {"id": 1, "name": "person", "supercategory": "person"}


def _annotations(boxes, instances, scale, image_id, first_id):
    """Pedestrian `i` (box row `i`, mask id `i + 1`) -> COCO annotations with RLE masks."""
    from pycocotools import mask as mask_utils

    height, width = instances.shape
    found = []
    for index, box in enumerate(boxes):
        instance = np.asfortranarray((instances == index + 1).astype("uint8"))  # (h, w)
        if not instance.any():
            continue
        x0, y0, x1, y1 = np.clip(box * scale, 0, [width, height, width, height])
        rle = mask_utils.encode(instance)
        found.append({
            "id": first_id + len(found), "image_id": image_id, "category_id": CATEGORY["id"],
            "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
            "area": int(instance.sum()), "iscrowd": 0,
            "segmentation": {"size": [height, width], "counts": rle["counts"].decode()},
        })
    return found


def write_pennfudan_coco(source_dir, output_dir, names=DEFAULT_NAMES, max_side=160, quality=90):
    """Writes `names` of a PennFudanPed folder as a small COCO-format data set.

    Args:
        source_dir: the PennFudanPed folder (`PNGImages/`, `PedMasks/`, `Annotation/`).
        output_dir: where `images/`, `annotations.json` and `labels.csv` go.
        names: the photos to take (file stems).
        max_side: the longer side of the written images, in pixels.
        quality: JPEG quality.

    Returns:
        The path of `annotations.json`.
    """
    import tensorflow as tf

    from keras_mtl.data import pennfudan

    os.makedirs(os.path.join(output_dir, "images"), exist_ok=True)
    images, annotations, rows = [], [], ["file_name,campus"]
    for image_id, name in enumerate(names, start=1):
        photo = tf.io.decode_png(tf.io.read_file(
            os.path.join(source_dir, "PNGImages", f"{name}.png")), channels=3)  # (H, W, 3)
        instances = tf.io.decode_png(tf.io.read_file(
            os.path.join(source_dir, "PedMasks", f"{name}_mask.png")), channels=1)  # (H, W, 1)
        with open(os.path.join(source_dir, "Annotation", f"{name}.txt"),
                  encoding="latin-1") as file:
            boxes = pennfudan.parse_annotation(file.read())  # (N, 4) xyxy of the photo
        height, width = (int(v) for v in photo.shape[:2])
        ratio = max_side / max(height, width)
        size = (round(height * ratio), round(width * ratio))
        small = tf.image.resize(photo, size, method="area", antialias=True)  # (h, w, 3)
        small = tf.cast(tf.clip_by_value(tf.round(small), 0, 255), tf.uint8)
        tf.io.write_file(os.path.join(output_dir, "images", f"{name}.jpg"),
                         tf.io.encode_jpeg(small, quality=quality))
        small_instances = tf.image.resize(instances, size, method="nearest")[..., 0].numpy()
        scale = np.array([size[1] / width, size[0] / height] * 2)
        annotations += _annotations(boxes, small_instances, scale, image_id, len(annotations) + 1)
        campus = pennfudan.CAMPUS_NAMES[pennfudan.campus_label(name)]
        images.append({"id": image_id, "file_name": f"{name}.jpg", "width": size[1],
                       "height": size[0], "campus": campus})
        rows.append(f"{name}.jpg,{campus}")
    data = {"info": {"description": "Penn-Fudan pedestrians (Wang, Shi, Song, Shen, ACCV "
                                    "2007), a few photos scaled down by keras_mtl",
                     "url": "https://www.cis.upenn.edu/~jshi/ped_html/"},
            "images": images, "annotations": annotations, "categories": [CATEGORY]}
    path = os.path.join(output_dir, "annotations.json")
    with open(path, "w") as file:
        json.dump(data, file, indent=1)
    with open(os.path.join(output_dir, "labels.csv"), "w") as file:
        file.write("\n".join(rows) + "\n")
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="the PennFudanPed folder")
    parser.add_argument("--output", required=True, help="the folder to write")
    parser.add_argument("--max-side", type=int, default=160)
    args = parser.parse_args(argv)
    print(write_pennfudan_coco(args.source, args.output, max_side=args.max_side))


if __name__ == "__main__":
    main()
