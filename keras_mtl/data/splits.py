"""Train/validation splits of a sorted list of example names: every k-th name validates.

A contiguous split of sorted names can put one kind of image (one camera,
one site, one class) only in validation; taking every `val_every`-th name
spreads validation over the whole list. Folds `0 .. val_every - 1` give a
cross-validation in which each name validates exactly once.

Example:

>>> split_names([f"img{i}" for i in range(10)], "val")
['img4', 'img9']
"""

SPLITS = ("train", "val", "all")


def split_names(names, split, val_every=5, fold=0):
    """The names of one split: `"val"` is every `val_every`-th sorted name.

    Names at sorted positions `val_every - 1 - fold, 2 * val_every - 1 -
    fold, ...` are validation, the rest training; `"all"` keeps every name.
    Folds `0 .. val_every - 1` are the `val_every` folds of a
    cross-validation (each name is validation in exactly one); fold 0 is
    the default split.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; use one of {SPLITS}.")
    if not 0 <= fold < val_every:
        raise ValueError(f"fold must be in [0, {val_every}) for val_every={val_every}, got {fold}.")
    names = sorted(names)
    if split == "all":
        return names
    is_val = [(index + 1 + fold) % val_every == 0 for index in range(len(names))]
    return [n for n, v in zip(names, is_val) if v == (split == "val")]
