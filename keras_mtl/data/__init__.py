"""tf.data pipelines in the data contract of DESIGN.md."""

from keras_mtl.data import shapes
from keras_mtl.data.checks import check_batch, unpack_batch

__all__ = ["check_batch", "shapes", "unpack_batch"]
