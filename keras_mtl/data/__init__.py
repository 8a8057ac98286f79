"""tf.data pipelines in the data contract of DESIGN.md."""

from keras_mtl.data import augment, coco, folder, mixing, pennfudan, shapes, tfds_datasets
from keras_mtl.data.augment import JointAugmentation
from keras_mtl.data.checks import check_batch, unpack_batch
from keras_mtl.data.coco import load_coco_json
from keras_mtl.data.files import DataError
from keras_mtl.data.folder import load_image_folder
from keras_mtl.data.info import DatasetInfo
from keras_mtl.data.mixing import complete_targets, mix_datasets, unlabelled_target
from keras_mtl.data.pennfudan import load_pennfudan
from keras_mtl.data.tfds_datasets import DataNotPreparedError, load_coco, load_oxford_pets
from keras_mtl.data.tfds_datasets import load_voc

__all__ = [
    "DataError", "DataNotPreparedError", "DatasetInfo", "JointAugmentation", "augment",
    "check_batch", "coco", "complete_targets", "folder", "load_coco", "load_coco_json",
    "load_image_folder", "load_oxford_pets", "load_pennfudan", "load_voc", "mix_datasets",
    "mixing", "pennfudan", "shapes", "tfds_datasets", "unlabelled_target", "unpack_batch",
]
