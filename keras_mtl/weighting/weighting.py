"""Base classes of task weightings: loss-based and gradient-based."""

import keras
from keras import ops

from keras_mtl.weighting import solvers
from keras_mtl.weighting import update_every as update_every_lib


class Weighting(keras.layers.Layer):
    """Base class of every weighting: per-task state in float32 variables.

    A weighting is a Keras layer owned by the `MultiTaskModel`, so its
    variables (learned log-variances, loss histories, ...) are trained,
    saved and restored with the model. The model calls `set_tasks` once
    with its tasks; `weights` holds the current per-task weights, which
    `fit` logs as `weight/<task>`.

    Subclasses set `gradient_based`, create their state in `build_state`,
    and implement `call` (loss-based) or `aggregate` (gradient-based).
    """

    gradient_based = False

    def __init__(self, **kwargs):
        kwargs["dtype"] = "float32"  # learned weights stay float32 under mixed precision
        super().__init__(**kwargs)
        self.task_names = None
        self.task_forms = None

    def set_tasks(self, tasks):
        """Tells the weighting which tasks it weighs and creates its state.

        Args:
            tasks: the model's list of `Task` objects, in output order.
        """
        self.task_names = [task.name for task in tasks]
        self.task_forms = [task.uncertainty_form for task in tasks]
        if not self.built:  # a weighting restored from a config is built already
            self.build((len(tasks),))
        elif self.weights_variable.shape[0] != len(tasks):
            raise ValueError(
                f"{type(self).__name__} was built for {self.weights_variable.shape[0]} tasks, "
                f"the model has {len(tasks)}: {self.task_names}."
            )

    @property
    def num_tasks(self):
        return len(self.task_names)

    def build(self, input_shape):
        self.weights_variable = self.add_weight(
            shape=(input_shape[0],), initializer="ones", trainable=False, name="task_weights"
        )
        self.build_common_state(input_shape[0])
        self.build_state(input_shape[0])
        self.built = True

    def build_common_state(self, num_tasks):
        """State every weighting of a kind has (before `build_state`); none here."""

    def build_state(self, num_tasks):
        """Creates the weighting's own variables; none by default."""

    def current_weights(self):
        """`(T,)` float32: the weights of the last step, for the logs."""
        return ops.convert_to_tensor(self.weights_variable)

    def seed_states(self):
        """The state variables of the weighting's `keras.random.SeedGenerator`s."""
        own = self.weights
        return [v for v in self.variables if not any(v is w for w in own)]

    def save_own_variables(self, store):
        # Keras saves a layer's weights but not its seed generators' states; a
        # run restored from a checkpoint (BackupAndRestore) must go on drawing
        # where it stopped (RLW's weights, PCGrad's orders, GradDrop's masks).
        super().save_own_variables(store)
        for index, state in enumerate(self.seed_states()):
            store[f"seed_state_{index}"] = state

    def load_own_variables(self, store):
        seed_keys = [key for key in store.keys() if key.startswith("seed_state_")]
        for index, state in enumerate(self.seed_states()):
            if f"seed_state_{index}" in seed_keys:  # absent in files of older versions
                state.assign(store[f"seed_state_{index}"])
        super().load_own_variables({key: store[key] for key in store.keys()
                                    if key not in seed_keys})

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        return config


class LossWeighting(Weighting):
    """A weighting that maps per-task losses to one scalar to minimise.

    `call(losses, present, training)` takes `losses` `(T,)` (the mean loss of
    each task on the batch, 0 where it has no labels) and `present` `(T,)`
    (1.0 where the task has labels in the batch, else 0.0) and returns the
    scalar. A task that is not present must get zero gradient and leave the
    weighting's statistics untouched.
    """

    def call(self, losses, present, training=False):
        weights = self.compute_weights(losses, present, training)  # (T,)
        if training:
            self.weights_variable.assign(weights)
        return ops.sum(weights * losses * present)

    def compute_weights(self, losses, present, training):
        """`(T,)` per-task weights for this step."""
        raise NotImplementedError


class GradientWeighting(Weighting):
    """A weighting that combines per-task gradients into one direction.

    The train step (`keras_mtl.training.steps.gradient_balanced_step`) computes, for every task t,
    the gradient `g_t` of `loss_scales()[t] * L_t` with respect to the shared
    parameters (the trunk's trainable variables, flattened and
    concatenated) or, with `rep_grad=True`, with respect to the shared
    features (the trunk's outputs P2..P5 of the batch, flattened), and calls

        direction = weighting.aggregate(grads, losses, present)

    - `grads`: `(T, D)` float32, row t = `g_t`, rows in task order.
    - `losses`: `(T,)` float32 mean loss of each task on the batch (before
      `loss_scales`), or `None` (methods that need losses then raise).
    - `present`: `(T,)` 1.0 where the task has labels in the batch, else
      0.0; `None` means all present. An absent task's row is zero, it is
      left out of every solver and statistic (it gets weight 0 and its own
      state, such as a moving average, is left untouched).
    - returns `direction` `(D,)`: the update that replaces the plain sum of
      the rows (its scale is the method's: MGDA's convex weights sum to 1,
      PCGrad's projected gradients are summed, ...).

    With `rep_grad=True` the step back-propagates `direction` through the
    trunk once. The parameters of each task's head always get that task's
    own gradient (of `loss_scales()[t] * L_t`). Every call also stores
    per-task weights for the logs (`weight/<task>`): where the direction is
    a combination `sum_t w_t g_t` of the rows, these are the `w_t` (0 for
    an absent task); each method's docstring says what it logs.

    Subclasses implement `compute_direction(grads, losses, present)`, which
    returns `(direction, weights)` and may update the weighting's own state
    (in its own variables, created in `build_state`), and may override
    `loss_scales()` (learned loss weights that also scale the heads'
    gradients: GradNorm, IMTL-L). Everything is tensor code of fixed shape,
    compilable with XLA.

    Gramian methods (`gramian_weights = True`: MGDA, UPGrad, IMTL,
    CAGrad, Nash-MTL, Aligned-MTL, PCGrad, GradVac, GradNorm and the
    calibrated balancing) produce a direction `sum_t w_t g_t` whose
    coefficients `w` depend on the gradients only through the `T x T`
    Gram matrix `G = J J^T`. They implement
    `compute_gramian_weights(gram, losses, present)` instead of
    `compute_direction`, and `weights_from_gramian` is public: the train
    step then never forms the `(T, D)` matrix (the idea of TorchJD's
    "autogram", Quinton and Rey 2024; see `keras_mtl.training.gramian`).

    Args:
        rep_grad: take the per-task gradients with respect to the shared
            features instead of the shared parameters (cheaper: one
            backward pass through the trunk instead of T). Methods whose
            paper defines them on parameter gradients only
            (`supports_rep_grad = False`) raise a `ValueError`.
        update_every: Gramian methods only: recompute the weights every
            this many calls and reuse the last ones in between (as
            Nash-MTL's reference code does); between two updates the train
            step takes one backward pass of `sum_t w_t L_t` and no per-task
            gradients. 1 (the default) recomputes them at every step. See
            `keras_mtl.weighting.update_every`.
        task_chunk_size: the train step computes the per-task gradients
            this many tasks at a time (a memory budget; see
            `keras_mtl.training.task_chunks`): Gramian methods accumulate
            the Gram matrix chunk by chunk and never hold more than
            `task_chunk_size + 1` tasks' gradients, at the price of
            recomputing some per-task gradients; the others hold the
            `(T, D)` matrix but run the backward passes a chunk at a time.
            `None` (the default): from `jacobian_budget_mib`.
        jacobian_budget_mib: the memory (MiB of float32) the per-task
            gradients may take at once; the chunk size follows from it and
            the size of one task's gradient. `None`:
            `task_chunks.AUTO_BUDGET_MIB` (no chunking while all T fit).

    Example:

    >>> weighting = keras_mtl.weighting.get("mgda")
    >>> weighting.set_tasks([Classification("a", 2), Classification("b", 2)])
    >>> weighting.aggregate(np.array([[1.0, 0.0], [0.0, 2.0]], "float32"))
    <tf.Tensor: shape=(2,), dtype=float32, numpy=array([0.8, 0.4], dtype=float32)>
    """

    gradient_based = True
    supports_rep_grad = True
    gramian_weights = False

    def __init__(self, rep_grad=False, update_every=1, task_chunk_size=None,
                 jacobian_budget_mib=None, **kwargs):
        super().__init__(**kwargs)
        self.rep_grad = bool(rep_grad)
        self.update_every = int(update_every)
        self.task_chunk_size = None if task_chunk_size is None else int(task_chunk_size)
        self.jacobian_budget_mib = (None if jacobian_budget_mib is None
                                    else float(jacobian_budget_mib))
        if self.update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {update_every}.")
        if self.task_chunk_size is not None and self.task_chunk_size < 1:
            raise ValueError(f"task_chunk_size must be >= 1, got {task_chunk_size}.")
        if self.jacobian_budget_mib is not None and self.jacobian_budget_mib <= 0:
            raise ValueError(f"jacobian_budget_mib must be > 0, got {jacobian_budget_mib}.")
        if self.update_every > 1 and not self.gramian_weights:
            raise ValueError(
                f"{type(self).__name__} does not combine the task gradients with weights computed "
                "from their Gram matrix, so it cannot reuse weights between steps: "
                "use update_every=1.")
        if self.rep_grad and not self.supports_rep_grad:
            raise ValueError(
                f"{type(self).__name__} is defined on the gradients of the shared parameters and "
                f"does not support rep_grad=True (gradients of the shared features); "
                f"use rep_grad=False."
            )

    def aggregate(self, grads, losses=None, present=None):
        """Combines the per-task gradients `(T, D)` into one direction `(D,)`.

        See the class docstring for the arguments. Updates the logged
        weights and the weighting's state.
        """
        grads = ops.cast(ops.convert_to_tensor(grads), "float32")  # (T, D)
        num_tasks = grads.shape[0]
        if not self.built:
            self.build((num_tasks,))
        if present is None:
            present = ops.ones((num_tasks,), "float32")
        present = ops.cast(ops.cast(present, "float32") > 0.5, "float32")  # (T,)
        grads = grads * ops.expand_dims(present, 1)  # absent rows are exactly zero
        if losses is not None:
            losses = ops.cast(ops.convert_to_tensor(losses), "float32") * present  # (T,)
        if self.gramian_weights and self.update_every > 1:
            coefficients = update_every_lib.amortized(
                self, lambda: self._fresh_gramian_weights(solvers.gram_matrix(grads), losses,
                                                          present))
            return solvers.combine(coefficients, grads)
        direction, weights = self.compute_direction(grads, losses, present)
        self.weights_variable.assign(ops.cast(weights, "float32"))
        return direction

    def compute_direction(self, grads, losses, present):
        """`(direction (D,), weights (T,))` for `grads` `(T, D)` (absent rows 0).

        Gramian methods get `sum_t w_t g_t` with `w` from
        `compute_gramian_weights` on `grads grads^T`."""
        if not self.gramian_weights:
            raise NotImplementedError
        coefficients, weights = self.compute_gramian_weights(solvers.gram_matrix(grads), losses,
                                                             present)
        return solvers.combine(coefficients, grads), weights

    def weights_from_gramian(self, gram, losses=None, present=None):
        """The coefficients `w` `(T,)` of the direction `sum_t w_t g_t`, from `G`.

        For Gramian methods (`gramian_weights = True`) only: `gram` is the
        `(T, T)` Gram matrix `G[s, t] = g_s . g_t` of the per-task gradients
        that `aggregate` would take; `losses` and `present` as there. The
        weights always are recomputed (`update_every` is the train step's
        and `aggregate`'s business), the logged weights and the method's
        state are updated exactly as by `aggregate`, and
        `aggregate(grads) == weights_from_gramian(grads @ grads.T) @ grads`.

        Example:

        >>> weighting = keras_mtl.weighting.get("mgda")
        >>> grads = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
        >>> weighting.weights_from_gramian(grads @ grads.T)
        <tf.Tensor: shape=(2,), dtype=float32, numpy=array([0.8, 0.2], dtype=float32)>
        """
        if not self.gramian_weights:
            raise TypeError(f"{type(self).__name__} needs the task gradients themselves, not "
                            "only their Gram matrix: use aggregate(grads).")
        gram = ops.cast(ops.convert_to_tensor(gram), "float32")  # (T, T)
        num_tasks = gram.shape[0]
        if not self.built:
            self.build((num_tasks,))
        present = solvers.present_mask(present, num_tasks)  # (T,)
        if losses is not None:
            losses = ops.cast(ops.convert_to_tensor(losses), "float32") * present  # (T,)
        return self._fresh_gramian_weights(solvers.masked_gram(gram, present), losses, present)

    def _fresh_gramian_weights(self, gram, losses, present):
        coefficients, weights = self.compute_gramian_weights(gram, losses, present)
        self.weights_variable.assign(ops.cast(weights, "float32"))
        return ops.cast(coefficients, "float32") * present

    def compute_gramian_weights(self, gram, losses, present):
        """`(coefficients (T,), logged weights (T,))` from the Gram matrix `(T, T)`.

        Gramian methods implement this instead of `compute_direction`: the
        direction is `sum_t coefficients[t] g_t`. `gram` has the rows and
        columns of absent tasks zeroed. The logged weights usually are the
        coefficients (GradNorm logs its loss weights, IMTL its coefficients
        on the unscaled gradients)."""
        raise NotImplementedError

    def loss_scales(self):
        """`(T,)` factors on each task's loss before differentiation; ones by default."""
        return ops.ones(self.weights_variable.shape, "float32")

    def build_gradient_state(self, gradient_dim):
        """Creates state whose size is the gradients' D (none by default).

        `MultiTaskModel` calls it once it knows its shared parameters, D =
        their number of entries."""

    def objective_scales(self, losses):
        """`(T,)` factors on each task's loss before differentiation, given this
        step's losses `(T,)`; the train step stops their gradient. The default
        is `loss_scales()`; DB-MTL returns `1 / (L_t + epsilon)`, which makes
        row t the gradient of `log(L_t + epsilon)`."""
        del losses
        return self.loss_scales()

    def build_common_state(self, num_tasks):
        if self.update_every > 1:
            update_every_lib.build_state(self, num_tasks)

    def get_config(self):
        config = {**super().get_config(), "rep_grad": self.rep_grad}
        if self.update_every > 1:
            config["update_every"] = self.update_every
        for name in ("task_chunk_size", "jacobian_budget_mib"):
            if getattr(self, name) is not None:
                config[name] = getattr(self, name)
        return config
