"""Tasks: each one a head, a loss, metrics, a decoder and target checks."""

from keras_mtl.tasks.classification import Classification
from keras_mtl.tasks.detection import Detection
from keras_mtl.tasks.segmentation import Segmentation
from keras_mtl.tasks.task import Task

__all__ = ["Classification", "Detection", "Segmentation", "Task"]
