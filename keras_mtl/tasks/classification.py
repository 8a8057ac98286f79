"""Image-level classification: one label per image, or several."""

import keras
import tensorflow as tf
from keras import layers, ops

from keras_mtl.tasks.task import Task, assert_in_range, broadcast_sample_weight
from keras_mtl.tasks.task import keras_serializable, labelled_mean, require_integer


@keras_serializable
class Classification(Task):
    """Classifies each image, from the trunk's coarsest pyramid level.

    Head: global average pooling of P5, optional dropout, a dense layer of
    logits. Loss: softmax cross-entropy (optionally label-smoothed), or
    per-class sigmoid cross-entropy with `multi_label=True`.

    Targets: `(B,)` integer class ids with `-1` for unlabelled images; with
    `multi_label=True`, `(B, C)` multi-hot 0/1 with `-1` for unknown entries.
    Outputs (`predict`): `name` -> `(B, C)` probabilities.
    Metrics: `<name>_accuracy` (and `<name>_auc` when multi-label).

    Args:
        name: task name.
        num_classes: number of classes C.
        multi_label: sigmoid per class instead of softmax.
        label_smoothing: in [0, 1); mixes the targets with uniform ones.
        dropout: dropout rate before the logits.

    Example:

    >>> task = Classification("species", num_classes=2)
    >>> loss, count = task.compute_loss(np.array([0, -1]), np.array([[2., 0.], [0., 1.]]))
    >>> float(count)
    1.0
    """

    def __init__(self, name, num_classes, multi_label=False, label_smoothing=0.0, dropout=0.0):
        super().__init__(name)
        if int(num_classes) < 1:
            raise self.error(f"num_classes must be >= 1, got {num_classes}.")
        if not 0.0 <= label_smoothing < 1.0:
            raise self.error(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        self.num_classes = int(num_classes)
        self.multi_label = bool(multi_label)
        self.label_smoothing = float(label_smoothing)
        self.dropout = float(dropout)

    def build_head(self, features, image_shape):
        x = layers.GlobalAveragePooling2D(name=f"{self.name}_pool")(features["P5"])  # (B, C5)
        if self.dropout:
            x = layers.Dropout(self.dropout, name=f"{self.name}_dropout")(x)
        return layers.Dense(self.num_classes, dtype="float32", name=f"{self.name}_logits")(x)

    def compute_loss(self, y_true, y_pred, sample_weight=None):
        logits = ops.cast(y_pred, "float32")  # (B, C)
        if self.multi_label:
            labels = ops.cast(y_true, "float32")  # (B, C), -1 = unknown
            mask = ops.cast(labels >= 0, "float32") * broadcast_sample_weight(sample_weight, labels)
            targets = ops.clip(labels, 0.0, 1.0)
            targets = targets * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
            per_entry = ops.binary_crossentropy(targets, logits, from_logits=True)  # (B, C)
            return labelled_mean(per_entry, mask)
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))  # (B,)
        mask = ops.cast(labels >= 0, "float32") * broadcast_sample_weight(sample_weight, labels)
        one_hot = ops.one_hot(ops.maximum(labels, 0), self.num_classes)  # (B, C)
        one_hot = one_hot * (1.0 - self.label_smoothing) + self.label_smoothing / self.num_classes
        per_sample = ops.categorical_crossentropy(one_hot, logits, from_logits=True)  # (B,)
        return labelled_mean(per_sample, mask)

    def build_metrics(self):
        if self.multi_label:
            return [
                keras.metrics.BinaryAccuracy(name=f"{self.name}_accuracy", threshold=0.0),
                keras.metrics.AUC(name=f"{self.name}_auc", from_logits=True,
                                  multi_label=True, num_labels=self.num_classes),
            ]
        return [keras.metrics.SparseCategoricalAccuracy(name=f"{self.name}_accuracy")]

    def update_metrics(self, metrics, y_true, y_pred, sample_weight=None):
        if self.multi_label:
            labels = ops.cast(y_true, "float32")
            mask = ops.cast(labels >= 0, "float32") * broadcast_sample_weight(sample_weight, labels)
            for metric in metrics:
                metric.update_state(ops.clip(labels, 0.0, 1.0), y_pred, sample_weight=mask)
            return
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        mask = ops.cast(labels >= 0, "float32") * broadcast_sample_weight(sample_weight, labels)
        for metric in metrics:
            metric.update_state(ops.maximum(labels, 0), y_pred, sample_weight=mask)

    def decode(self, y_pred):
        activation = ops.sigmoid if self.multi_label else ops.softmax
        return {self.name: activation(ops.cast(y_pred, "float32"))}

    def check_targets(self, y_true, image_shape):
        if isinstance(y_true, dict):
            raise self.error(f"targets must be a tensor, got a dict with keys {sorted(y_true)}.")
        y_true = tf.convert_to_tensor(y_true)
        if self.multi_label:
            if y_true.shape.rank != 2 or y_true.shape[-1] not in (None, self.num_classes):
                raise self.error(
                    f"multi-label targets must have shape (B, {self.num_classes}), got {y_true.shape}."
                )
            ok = tf.reduce_all((y_true == 0) | (y_true == 1) | (y_true == -1))
            check = tf.debugging.Assert(
                ok, [f"Task '{self.name}': multi-hot targets must be 0, 1 or -1 (unknown)."])
            with tf.control_dependencies([check]):
                return tf.identity(y_true)
        require_integer(y_true, self, "targets")
        if y_true.shape.rank == 2 and y_true.shape[-1] == 1:
            y_true = y_true[:, 0]
        if y_true.shape.rank != 1:
            raise self.error(
                f"targets must have shape (B,) of class ids (or (B, {self.num_classes}) with "
                f"multi_label=True), got {y_true.shape}."
            )
        return assert_in_range(y_true, 0, self.num_classes, self.name, "class id", allowed=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "multi_label": self.multi_label,
            "label_smoothing": self.label_smoothing,
            "dropout": self.dropout,
        }
