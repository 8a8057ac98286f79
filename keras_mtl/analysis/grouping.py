"""Task groupings from an affinity matrix: which tasks should share a trunk."""

import itertools
import math

import numpy as np

REDUCTIONS = ("mean", "max")


def partitions(items, k):
    """Every partition of `items` into exactly `k` non-empty groups (tuples).

    Groups keep the order of `items`; each partition is yielded once.

    Example:

    >>> list(partitions([0, 1, 2], 2))
    [((0, 1), (2,)), ((0, 2), (1,)), ((0,), (1, 2))]
    """
    items = list(items)
    if k < 1 or k > len(items):
        return

    def grow(index, groups):
        remaining = len(items) - index
        if remaining == 0:
            if len(groups) == k:
                yield tuple(tuple(group) for group in groups)
            return
        if len(groups) + remaining < k:
            return
        item = items[index]
        for group in groups:  # join an existing group
            group.append(item)
            yield from grow(index + 1, groups)
            group.pop()
        if len(groups) < k:  # or open a new one
            groups.append([item])
            yield from grow(index + 1, groups)
            groups.pop()

    yield from grow(0, [])


def group_affinity(affinity, group, task, reduction="mean", singleton=0.0):
    """The affinity of `group` onto `task`: the mean (or max) of `affinity[i, task]`
    over the other members i of the group; `singleton` when there are none."""
    others = [i for i in group if i != task]
    if not others:
        return singleton
    values = np.asarray([affinity[i, task] for i in others], dtype="float64")
    values = np.where(np.isfinite(values), values, 0.0)
    return float(values.mean() if reduction == "mean" else values.max())


def grouping_score(affinity, groups, reduction="mean", singleton=0.0):
    """Total affinity of `groups` (lists of task indices): the sum over tasks of
    the affinity onto it of the best group that contains it."""
    affinity = np.asarray(affinity, dtype="float64")
    total = 0.0
    for task in range(affinity.shape[0]):
        scores = [group_affinity(affinity, group, task, reduction, singleton)
                  for group in groups if task in group]
        total += max(scores)
    return total


def propose_groups(affinity, k, task_names=None, overlapping=False, reduction="mean",
                   singleton=0.0, max_candidates=2_000_000):
    """Groups the tasks into `k` shared trunks, maximising the total affinity.

    Exhaustive search. The score of a grouping is the sum over tasks j of
    the affinity onto j of the best group that contains it, the affinity of
    a group onto j being the mean (`reduction="mean"`, as in Fifty et al.,
    "Efficiently Identifying Task Groupings for Multi-Task Learning",
    NeurIPS 2021, network selection) or the max (`"max"`) of
    `affinity[i, j]` over the other members i; a task alone in its group
    scores `singleton` (0: no transfer).

    - `overlapping=False` (default): partitions into exactly `k` groups;
      each task is trained in one trunk. (S(T, k) candidates: T = 10,
      k = 3 is 9,330.)
    - `overlapping=True`: the paper's selection: `k` distinct groups that
      together cover every task, a task may be in several (it is then
      served by the one with the best affinity onto it).

    Args:
        affinity: `(T, T)` matrix, `affinity[i, j]` = effect of task i on
            task j (as `keras_mtl.analysis.task_affinity` returns); the
            diagonal is ignored, NaN counts as 0.
        k: the number of groups (trunks), 1 <= k <= T (overlapping:
            1 <= k <= 2**T - 1).
        task_names: optional names; groups are then tuples of names.
        overlapping: see above.
        reduction: `"mean"` or `"max"`.
        singleton: the score of a task alone in its group.
        max_candidates: raise rather than enumerate more groupings.

    Returns:
        `(groups, score)`: a list of `k` tuples of task indices (or names),
        and its total affinity. Ties go to the first grouping found.

    Raises:
        ValueError: bad shape, `k` or `reduction`, or too many candidates.

    Example:

    >>> affinity = np.array([[0, .5, -.2], [.4, 0, -.1], [-.3, -.2, 0]])
    >>> propose_groups(affinity, 2, ["a", "b", "c"])
    ([('a', 'b'), ('c',)], 0.9)
    """
    affinity = np.asarray(affinity, dtype="float64")
    if affinity.ndim != 2 or affinity.shape[0] != affinity.shape[1]:
        raise ValueError(f"affinity must be a square (T, T) matrix, got shape {affinity.shape}.")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")
    num_tasks = affinity.shape[0]
    if task_names is not None and len(task_names) != num_tasks:
        raise ValueError(f"{len(task_names)} task names for a {num_tasks}x{num_tasks} matrix.")
    tasks = list(range(num_tasks))
    if overlapping:
        subsets = [subset for size in range(1, num_tasks + 1)
                   for subset in itertools.combinations(tasks, size)]
        if not 1 <= k <= len(subsets):
            raise ValueError(f"k must be in [1, {len(subsets)}] for {num_tasks} tasks, got {k}.")
        count = math.comb(len(subsets), k)
        candidates = (c for c in itertools.combinations(subsets, k)
                      if set().union(*c) == set(tasks))
    else:
        if not 1 <= k <= num_tasks:
            raise ValueError(f"k must be in [1, {num_tasks}] for {num_tasks} tasks, got {k}.")
        count = _stirling2(num_tasks, k)
        candidates = partitions(tasks, k)
    if count > max_candidates:
        raise ValueError(f"{count:,} candidate groupings exceed max_candidates={max_candidates:,}.")

    best, best_score = None, -np.inf
    for groups in candidates:
        score = grouping_score(affinity, groups, reduction, singleton)
        if score > best_score + 1e-12:
            best, best_score = groups, score
    groups = [tuple(group) for group in best]
    if task_names is not None:
        groups = [tuple(task_names[i] for i in group) for group in groups]
    return groups, float(best_score)


def _stirling2(n, k):
    """Stirling number of the second kind: partitions of n items into k groups."""
    total = sum((-1) ** i * math.comb(k, i) * (k - i) ** n for i in range(k + 1))
    return total // math.factorial(k)
