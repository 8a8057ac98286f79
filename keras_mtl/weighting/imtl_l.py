"""IMTL-L: learned log-scales that make every scaled task loss equal to 1."""

from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting.weighting import LossWeighting


@keras_serializable
class IMTLL(LossWeighting):
    """The loss-balance half of impartial multi-task learning, IMTL-L (Liu et
    al., "Towards Impartial Multi-task Learning", ICLR 2021; reference
    behaviour: TorchJD's `torchjd.scalarization.IMTLL` and the loss part of
    LibMTL's `IMTL`).

    One log-scale `s_t` per task (a trainable variable, start 0, trained by
    the model's optimiser together with the network) and the scalar

        sum_t  exp(s_t) L_t - s_t

    over the tasks labelled in the batch. Its minimum over `s_t` is at
    `exp(s_t) L_t = 1`: every scaled loss is pulled to the same value, so
    no task dominates by the size of its loss. The `- s_t` term keeps `s_t`
    from running to minus infinity. The network's gradients see task t
    weighted by `exp(s_t)`, the logged weight.

    This is the loss-based weighting alone (no per-task gradients: the cost
    of equal weighting). The paper's full IMTL, which also balances the
    gradients (IMTL-G) and trains `s` with its own Adam step, is
    `"imtl"` (`mode="hybrid"`). As TorchJD notes, the objective equals twice
    uncertainty weighting's regression form with `s = -log(sigma^2)`.

    A task without labels in a batch contributes neither term: its `s_t`
    gets zero gradient and its logged weight is kept.

    Args:
        initial_log_scale: starting value of every `s_t` (0: the plain sum).

    Example:

    >>> from keras_mtl.tasks import Classification
    >>> weighting = IMTLL()
    >>> weighting.set_tasks([Classification("a", 2), Classification("b", 2)])
    >>> float(weighting(np.array([1.0, 2.0]), np.ones(2)))  # s = 0: 1 + 2
    3.0
    """

    def __init__(self, initial_log_scale=0.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_log_scale = float(initial_log_scale)

    def build_state(self, num_tasks):
        self.log_scales = self.add_weight(
            shape=(num_tasks,), name="log_scales",
            initializer=lambda shape, dtype: ops.full(shape, self.initial_log_scale, dtype),
        )

    def call(self, losses, present, training=False):
        losses = ops.cast(losses, "float32")  # (T,)
        present = ops.cast(present, "float32")  # (T,)
        log_scales = ops.convert_to_tensor(self.log_scales)  # (T,)
        scales = ops.exp(log_scales)  # (T,)
        if training:
            self.weights_variable.assign(
                ops.where(present > 0.0, ops.stop_gradient(scales), self.weights_variable))
        return ops.sum(present * (scales * losses - log_scales))

    def get_config(self):
        return {**super().get_config(), "initial_log_scale": self.initial_log_scale}
