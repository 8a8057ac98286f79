"""The forward pass of a multi-task model, cut at its shared features.

The gradient-balanced step with `rep_grad=True`, the clipped loss step and
the gradient measurements of `keras_mtl.analysis` run the trunk and the
heads separately: the features become independent leaves of the tape, so
each task's gradient with respect to them stops there (one cheap backward
pass through the heads per task) and the features' combined gradient is
back-propagated through the trunk once.
"""

import keras
import tensorflow as tf


class FeatureSplit:
    """Two Functional views of a model, cut at `model.shared_features`.

    `features_model`: images -> shared features (for hard sharing the
    trunk's P2..P5, as a list in `keras.tree.flatten` order of the trunk's
    output dict); `heads_model`: shared features -> the model's raw outputs.
    Both share every layer with the model (no copy). Built on first use;
    `MultiTaskModel.feature_split` holds one per model.

    Args:
        model: a built Functional model with `shared_features` (symbolic
            tensors of its graph).

    Example:

    >>> model = keras_mtl.build_mtl(
    ...     [Classification("c", 2), Segmentation("s", 3)],
    ...     trunk="micro_resnet", weights=None, input_shape=(32, 32, 3))
    >>> split = FeatureSplit(model)
    >>> images = np.zeros((1, 32, 32, 3), "float32")
    >>> with tf.GradientTape() as tape:
    ...     features, leaves, outputs = split.run(images, tape, training=True)
    >>> [tuple(feature.shape) for feature in features], sorted(outputs)
    ([(1, 8, 8, 8), (1, 4, 4, 16), (1, 2, 2, 16), (1, 1, 1, 32)], ['c', 's'])
    """

    def __init__(self, model):
        self.model = model
        self._features_model = None
        self._heads_model = None

    @property
    def features_model(self):
        if self._features_model is None:
            self._features_model = keras.Model(self.model.input, self.model.shared_features,
                                               name=f"{self.model.name}_features")
        return self._features_model

    @property
    def heads_model(self):
        if self._heads_model is None:
            self._heads_model = keras.Model(self.model.shared_features, self.model.output,
                                            name=f"{self.model.name}_heads")
        return self._heads_model

    def run(self, images, tape, training, wrap=None):
        """Runs the model on `images` in two parts; `tape` watches the cut.

        Args:
            images: `(B, H, W, 3)`.
            tape: the `tf.GradientTape` recording the step (entered).
            training: the mode of the forward pass.
            wrap: optional `(key, fn) -> fn` applied to each part (per-replica
                XLA, see `keras_mtl.distribute.PerReplicaXLA.wrap`).

        Returns:
            `(features, leaves, outputs)`: the features as computed from the
            images (differentiable with respect to the shared parameters),
            the same values as watched leaves (the heads' inputs), and the
            dict of raw outputs.
        """
        wrap = wrap or (lambda key, fn: fn)
        features_fn = wrap("features", lambda x: self.features_model(x, training=training))
        features = keras.tree.flatten(features_fn(images))  # [P2, ..., P5]
        leaves = [tf.stop_gradient(feature) for feature in features]
        tape.watch(leaves)
        heads_fn = wrap("heads", lambda f: self.heads_model(f, training=training))
        return features, leaves, heads_fn(leaves)
