"""GO4Align: risk-guided task weights, averaged within groups of similar tasks."""

import itertools

import numpy as np
from keras import ops

from keras_mtl.tasks.task import keras_serializable
from keras_mtl.weighting.weighting import LossWeighting


def _contiguous_partitions(num_items, num_groups):
    """`(C, K, T)` float32 0/1: every split of T sorted positions into K contiguous runs.

    Row `[c, k]` marks the positions of group k in candidate c (K-1 cuts
    among the T-1 gaps; for T < K, one position a group and empty groups).
    """
    groups = min(num_groups, num_items)
    candidates = []
    for cuts in itertools.combinations(range(1, num_items), groups - 1):
        labels = np.searchsorted(np.array(cuts), np.arange(num_items), side="right")  # (T,)
        candidates.append(labels[None, :] == np.arange(num_groups)[:, None])  # (K, T)
    return np.stack(candidates).astype("float32")


def group_means_1d(values, present, num_groups):
    """Each present entry of `values` `(T,)` replaced by the mean of its group,
    the groups being the exact k-means clustering into `num_groups` groups.

    In one dimension the optimal k-means groups are runs of the sorted
    values, so every split of the sorted present values into `num_groups`
    runs is scored (all at once, a few hundred candidates for T <= 10) and
    the one of least within-group sum of squares is kept: the global
    optimum that Lloyd's iterations look for, deterministic. Absent entries
    (`present == 0`) are left out of the groups and returned as 0.
    """
    num_tasks = values.shape[0]
    labelled = present > 0.0  # (T,)
    order = ops.argsort(ops.where(labelled, values, ops.max(values) + 1.0))  # present first
    sorted_values = ops.take(ops.where(labelled, values, 0.0), order)  # (T,)
    sorted_present = ops.take(present, order)  # (T,) ones, then zeros
    members = ops.convert_to_tensor(_contiguous_partitions(num_tasks, num_groups))  # (C, K, T)
    members = members * sorted_present[None, None, :]  # absent positions join no group
    counts = ops.sum(members, axis=2)  # (C, K)
    means = ops.sum(members * sorted_values, axis=2) / ops.maximum(counts, 1.0)  # (C, K)
    fitted = ops.sum(members * means[:, :, None], axis=1)  # (C, T) each position's group mean
    within = ops.sum(sorted_present * ops.square(sorted_values - fitted), axis=1)  # (C,)
    best = ops.take(fitted, ops.argmin(within), axis=0)  # (T,) in sorted order
    return ops.take(best, ops.argsort(order)) * present  # (T,) back in task order


@keras_serializable
class GO4Align(LossWeighting):
    """Group optimisation for multi-task alignment (Shen et al., "GO4Align:
    Group Optimization for Multi-Task Alignment", NeurIPS 2024; reference
    code `autumn9999/GO4Align`, `methods/cluster_methods.py`, class
    `GO4ALIGN`).

    Each step, from the losses `L` `(T,)` of the tasks labelled in the batch:

    1. Risk-guided indicators: a distribution `p` over the tasks (start
       uniform) takes an exponentiated step `p_t <- p_t exp(-eta L_t)`,
       renormalised (`robust_step_size` = `eta`), and each task's raw weight
       is `r_t = (sum_s L_s / L_t) p_t`: the loss-ratio scale that equalises
       the weighted losses, times the indicator.
    2. Dynamic group assignment: the raw weights are clustered into
       `num_groups` groups (k-means in one dimension) and every task gets
       its group's mean weight, so tasks that behave alike move together.

    The scalar is `sum_t w_t L_t` with the grouped weights `w` (held
    constant: no gradient through them), the logged weights. One group
    gives every task the mean raw weight; as many groups as tasks keep the
    raw weights.

    Deviations from the reference code, all of them choices the reference
    leaves open: the k-means is exact (the best split of the sorted raw
    weights, deterministic) instead of `kmeans_pytorch`'s randomly
    initialised Lloyd iterations; the default `num_groups` is 2 (the
    reference script's default, 1, makes every weight the same); losses
    are floored at `epsilon` in the ratio.

    Missing labels: an unlabelled task is left out of the ratio, the
    indicator step (its `p_t` is untouched and the labelled tasks' `p` are
    renormalised to the mass they had), and the groups; it gets zero loss
    and gradient and keeps its last logged weight. Evaluation
    (`training=False`) uses `p` without updating it.

    Args:
        num_groups: number of task groups K (>= 1).
        robust_step_size: step size `eta` of the indicator update
            (reference: 1e-4).
        epsilon: floor of each loss in the ratio `sum L / L_t`.

    Example:

    >>> from keras_mtl.tasks import Classification
    >>> weighting = GO4Align(num_groups=1, robust_step_size=0.0)
    >>> weighting.set_tasks([Classification("a", 2), Classification("b", 2)])
    >>> round(float(weighting(np.array([1.0, 3.0]), np.ones(2), training=True)), 4)  # w = 4/3
    5.3333
    """

    def __init__(self, num_groups=2, robust_step_size=1e-4, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        if int(num_groups) < 1:
            raise ValueError(f"GO4Align num_groups must be >= 1, got {num_groups}.")
        self.num_groups = int(num_groups)
        self.robust_step_size = float(robust_step_size)
        self.epsilon = float(epsilon)

    def build_state(self, num_tasks):
        self.indicators = self.add_weight(
            shape=(num_tasks,), trainable=False, name="indicators",
            initializer=lambda shape, dtype: ops.full(shape, 1.0 / num_tasks, dtype))

    def _updated_indicators(self, losses, present):
        """`p` after one exponentiated step on the labelled tasks' losses `(T,)`."""
        indicators = ops.convert_to_tensor(self.indicators)  # (T,)
        mass = ops.sum(indicators * present)  # () kept by the labelled tasks
        stepped = indicators * ops.exp(-self.robust_step_size * losses) * present  # (T,)
        stepped = mass * stepped / ops.maximum(ops.sum(stepped), 1e-30)
        return ops.where(present > 0.0, stepped, indicators)

    def call(self, losses, present, training=False):
        losses = ops.cast(losses, "float32")  # (T,)
        present = ops.cast(present, "float32")  # (T,)
        labelled = present > 0.0  # (T,)
        safe = ops.stop_gradient(ops.where(labelled, ops.maximum(losses, self.epsilon), 1.0))
        indicators = self._updated_indicators(safe, present)  # (T,)
        if training:
            self.indicators.assign(indicators)
        shares = indicators * present / ops.maximum(ops.sum(indicators * present), 1e-30)  # (T,)
        ratios = ops.sum(safe * present) / safe  # (T,) sum_s L_s / L_t
        weights = group_means_1d(ratios * shares * present, present, self.num_groups)  # (T,)
        if training:
            self.weights_variable.assign(ops.where(labelled, weights, self.weights_variable))
        return ops.sum(weights * losses * present)

    def get_config(self):
        return {**super().get_config(), "num_groups": self.num_groups,
                "robust_step_size": self.robust_step_size, "epsilon": self.epsilon}
