"""Random Loss Weighting: fresh random weights at every training step."""

import keras
from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting import portable_random
from keras_mtl.weighting.weighting import LossWeighting


@keras_serializable
class RandomLossWeighting(LossWeighting):
    """Weighs the losses with random weights drawn at every step (Lin, Ye,
    Zhang and Tsang, "Reasonable Effectiveness of Random Weighting: A Litmus
    Test for Multi-Task Learning", TMLR 2022).

    Each training step draws `p ~ N(0, I_T)` and minimises

        sum_t softmax(p)_t * L_t          (the weights sum to 1)

    the paper's default (normal) sampling distribution, with the paper's
    and LibMTL's normalisation: the weights sum to 1, so the total loss is
    on the scale of a mean of the task losses (not their sum, as with
    `equal`; with plain SGD use a learning rate about T times larger to
    match `equal`). The samples come from the layer's own
    `keras.random.SeedGenerator(seed)` through `portable_random`, so a run is
    reproducible for a seed, with or without XLA and on any number of
    replicas. Evaluation (`training=False`) uses the expected weights `1/T`
    (exchangeable draws) and draws nothing. An absent task (`present == 0`)
    contributes zero loss and gradient; RLW keeps no per-task statistics.

    Args:
        seed: int seed of the weight draws; `None` takes one from Keras'
            global seed (`keras.utils.set_random_seed`).

    Example:

    >>> weighting = RandomLossWeighting(seed=1)
    >>> weighting.set_tasks([Classification("a", 2), Classification("b", 2)])
    >>> total = weighting(np.array([1.0, 2.0]), np.ones(2), training=True)
    >>> float(ops.sum(weighting.current_weights()))
    1.0
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = None if seed is None else int(seed)

    def build_state(self, num_tasks):
        self.seed_generator = keras.random.SeedGenerator(self.seed, name="rlw_seed_generator")

    def compute_weights(self, losses, present, training):
        num_tasks = ops.shape(losses)[0]
        if not training:
            return ops.full((num_tasks,), 1.0 / num_tasks, "float32")  # (T,) the expectation
        logits = portable_random.normal(self.seed_generator, (num_tasks,))  # (T,)
        return ops.softmax(logits)

    def call(self, losses, present, training=False):
        losses = ops.cast(losses, "float32")  # (T,)
        present = ops.cast(present, "float32")  # (T,)
        return super().call(losses, present, training=training)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
