"""Small data samples shipped with keras_mtl.

- `PENNFUDAN_COCO`: 10 Penn-Fudan photos (5 per campus, longer side 160 px)
  in COCO format: `images/`, `annotations.json` (boxes, RLE masks, a
  "campus" image field) and `labels.csv` (`file_name,campus`). Written by
  `keras_mtl.data.samples.build_pennfudan_coco`.

Example:

>>> from keras_mtl.data import coco, samples
>>> ds = coco.load_coco_json(samples.pennfudan_coco("images"),
...                          samples.pennfudan_coco("annotations.json"), image_size=64)
>>> images, targets = next(iter(ds))
>>> images.shape, sorted(targets)
(TensorShape([8, 64, 64, 3]), ['mask', 'objects'])
"""

import os

PENNFUDAN_COCO = os.path.join(os.path.dirname(__file__), "pennfudan_coco")


def pennfudan_coco(*parts):
    """A path inside the shipped Penn-Fudan COCO sample, e.g. `pennfudan_coco("images")`."""
    return os.path.join(PENNFUDAN_COCO, *parts)
