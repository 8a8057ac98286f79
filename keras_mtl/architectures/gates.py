"""Gates of the mixture-of-experts architectures: per-sample weights over E experts.

A gate maps pooled features `(B, C)` to expert weights `(B, E)` that are
non-negative and sum to 1 per sample. `SoftmaxGate` is the gate of MMoE,
CGC and PLE (a linear map and a softmax, optionally restricted to the
`top_k` largest logits); `DSelectGate` is the differentiable selector of
DSelect-k. Every gate records the task it serves (`task`), which
`gate_loads` reads.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_mtl.registry import keras_serializable

GATE_TYPES = ("softmax", "top_k")


@keras_serializable
class SoftmaxGate(keras.layers.Layer):
    """Linear gate with a softmax over the experts, optionally top-k sparse.

    `weights = softmax(x W + b)` (Ma et al., KDD 2018, eq. 6), or with
    `gate="top_k"` the softmax over the `top_k` largest logits only, the
    others getting weight 0 (the sparse gate of Shazeer et al., ICLR 2017,
    without its noise). Computed in float32.

    Args:
        num_experts: E, the number of weights.
        gate: `"softmax"` or `"top_k"`.
        top_k: experts kept per sample when `gate="top_k"`.
        task: the task the gate serves (`None` for a shared gate).

    Example:

    >>> gate = SoftmaxGate(4, gate="top_k", top_k=2, kernel_initializer="ones")
    >>> weights = gate(np.array([[0.0, 1.0]], "float32"))
    >>> tuple(weights.shape), float(ops.sum(weights))
    ((1, 4), 1.0)
    """

    def __init__(self, num_experts, gate="softmax", top_k=2, task=None,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if gate not in GATE_TYPES:
            raise ValueError(f"SoftmaxGate: gate must be one of {GATE_TYPES}, got {gate!r}.")
        if int(num_experts) < 1 or not 1 <= int(top_k):
            raise ValueError("SoftmaxGate: num_experts and top_k must be >= 1.")
        self.num_experts = int(num_experts)
        self.gate = gate
        self.top_k = int(top_k)
        self.task = task
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.dense = keras.layers.Dense(self.num_experts, kernel_initializer=kernel_initializer,
                                        dtype="float32", name="logits")

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        logits = self.dense(ops.cast(x, "float32"))  # (B, E)
        if self.gate == "top_k" and self.top_k < self.num_experts:
            kth = ops.top_k(logits, self.top_k)[0][:, -1:]  # (B, 1)
            logits = ops.where(logits >= kth, logits, ops.full_like(logits, -1e9))
        return softmax(logits)  # (B, E), rows sum to 1

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_experts)

    def compute_output_spec(self, x):
        return keras.KerasTensor((x.shape[0], self.num_experts), dtype="float32")

    def get_config(self):
        return {**super().get_config(), "num_experts": self.num_experts, "gate": self.gate,
                "top_k": self.top_k, "task": self.task,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


def softmax(logits):
    """Softmax over the last axis, written out: exactly 1 for a single logit
    (where `keras.ops.softmax` warns)."""
    e = ops.exp(logits - ops.max(logits, axis=-1, keepdims=True))
    return e / ops.sum(e, axis=-1, keepdims=True)


def smooth_step(t, gamma=1.0):
    """The cubic smooth-step of DSelect-k (Hazimeh et al., NeurIPS 2021, eq. 3).

    0 for `t <= -gamma/2`, 1 for `t >= gamma/2`, and
    `-2 t^3 / gamma^3 + 3 t / (2 gamma) + 1/2` between: continuously
    differentiable, with exact zeros and ones outside the interval.

    Example:

    >>> [float(v) for v in smooth_step(np.array([-1.0, -0.25, 0.0, 0.5, 2.0]))]
    [0.0, 0.15625, 0.5, 1.0, 1.0]
    """
    t = ops.convert_to_tensor(t)
    cubic = -2.0 / gamma**3 * t**3 + 1.5 / gamma * t + 0.5
    return ops.where(t <= -gamma / 2, ops.zeros_like(t),
                     ops.where(t >= gamma / 2, ops.ones_like(t), cubic))


def binary_codes(num_experts):
    """`(E, m)` float matrix, row e the m = ceil(log2 E) bits of e (most significant first)."""
    width = max(1, math.ceil(math.log2(num_experts)))
    return np.array([[(e >> (width - 1 - j)) & 1 for j in range(width)]
                     for e in range(num_experts)], "float32")


@keras_serializable
class DSelectGate(keras.layers.Layer):
    """The DSelect-k gate: k binary-encoded selectors, mixed by a softmax.

    Hazimeh, Zhao, Chowdhery, Sathiamoorthy, Chen, Mazumder, Hong, Chi,
    "DSelect-k: Differentiable Selection in the Mixture of Experts with
    Applications to Multi-Task Learning", NeurIPS 2021 (per-example gate,
    section 3.2). Each of the k selectors has m = ceil(log2 E) logits `z`;
    its weight on expert e is `prod_j S(z_j)` where bit j of e is 1 and
    `1 - S(z_j)` where it is 0 (S: `smooth_step`); with E a power of two the
    weights sum to 1, and once every `|z_j| >= gamma/2` they are one-hot.
    The gate is `sum_i softmax(w)_i * r(z_i)`: at most k experts are
    non-zero when the selectors have converged. `z` and `w` are linear in
    the input, initialised as the reference code (uniform in
    `+-gamma/100` and `+-0.05`).

    Regularisation (added with `add_loss` in training, as in the paper and
    the reference code): `entropy_weight` times the selectors' entropy
    (mean over the batch, summed over selectors), which pushes each
    selector to a single expert; when E is not a power of two, codes
    beyond E select nothing, and `sum_i 1 / sum_e r(z_i)_e` (mean over the
    batch) keeps the selectors on valid experts. Computed in float32.

    Args:
        num_experts: E.
        num_selectors: k, the number of experts selected at convergence.
        gamma: width of the smooth-step's transition.
        entropy_weight: weight of the entropy regularisation (0: off).
        task: the task the gate serves.

    Example:

    >>> gate = DSelectGate(4, num_selectors=2)
    >>> weights = gate(np.ones((3, 8), "float32"))
    >>> tuple(weights.shape), bool(np.allclose(ops.sum(weights, axis=-1), 1.0))
    ((3, 4), True)
    """

    def __init__(self, num_experts, num_selectors=1, gamma=1.0, entropy_weight=1e-6, task=None,
                 **kwargs):
        super().__init__(**kwargs)
        if int(num_experts) < 1 or int(num_selectors) < 1 or gamma <= 0:
            raise ValueError("DSelectGate: num_experts, num_selectors >= 1 and gamma > 0.")
        self.num_experts = int(num_experts)
        self.num_selectors = int(num_selectors)
        self.gamma = float(gamma)
        self.entropy_weight = float(entropy_weight)
        self.task = task
        self.codes = binary_codes(self.num_experts)  # (E, m)
        self.num_bits = self.codes.shape[1]
        self.power_of_two = 2 ** self.num_bits == self.num_experts
        def uniform(limit):
            return keras.initializers.RandomUniform(-limit, limit)

        self.z_logits = keras.layers.Dense(
            self.num_selectors * self.num_bits, dtype="float32", name="z_logits",
            kernel_initializer=uniform(self.gamma / 100), bias_initializer=uniform(self.gamma / 100))
        self.w_logits = keras.layers.Dense(
            self.num_selectors, dtype="float32", name="w_logits",
            kernel_initializer=uniform(0.05), bias_initializer=uniform(0.05))

    def build(self, input_shape):
        self.z_logits.build(input_shape)
        self.w_logits.build(input_shape)

    def selectors(self, x):
        """`(B, k, E)`: each selector's weights over the experts."""
        z = self.z_logits(ops.cast(x, "float32"))  # (B, k * m)
        z = ops.reshape(z, (-1, self.num_selectors, 1, self.num_bits))  # (B, k, 1, m)
        s = smooth_step(z, self.gamma)
        codes = ops.convert_to_tensor(self.codes)[None, None]  # (1, 1, E, m)
        return ops.prod(codes * s + (1.0 - codes) * (1.0 - s), axis=-1)  # (B, k, E)

    def call(self, x, training=False):
        r = self.selectors(x)  # (B, k, E)
        alpha = softmax(self.w_logits(ops.cast(x, "float32")))  # (B, k)
        if training:
            penalty = 0.0
            if self.entropy_weight:
                entropy = -ops.sum(r * ops.log(r + 1e-6), axis=(1, 2))  # (B,)
                penalty = self.entropy_weight * ops.mean(entropy)
            if not self.power_of_two:
                penalty = penalty + ops.mean(ops.sum(1.0 / ops.sum(r, axis=-1), axis=-1))
            if self.entropy_weight or not self.power_of_two:
                self.add_loss(penalty)
        return ops.einsum("bk,bke->be", alpha, r)  # (B, E)

    def compute_output_spec(self, x, training=False):
        return keras.KerasTensor((x.shape[0], self.num_experts), dtype="float32")

    def get_config(self):
        return {**super().get_config(), "num_experts": self.num_experts,
                "num_selectors": self.num_selectors, "gamma": self.gamma,
                "entropy_weight": self.entropy_weight, "task": self.task}
