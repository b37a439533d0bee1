"""The Keras layer that applies magnitude masks to a wrapped layer's weights.

`PruneLowMagnitude` owns, per prunable weight, a `mask` and a `threshold`, plus a
`pruning_step` and the step of the last mask update. In training calls it
advances the step, recomputes masks when the schedule says so, and runs the
wrapped layer with `weight * mask` substituted for each pruned weight, so pruned
weights receive no gradient. Stored weights are zeroed at pruned positions at
every mask update and whenever the layer is saved.

Use `tfprune.prune_low_magnitude` rather than this class directly.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import keras
import tensorflow as tf

from tfprune import layers as layer_registry
from tfprune.hparams import PruningHParams, as_hparams
from tfprune.masks import input_channel_axis
from tfprune.mask_rules import LayerMaskRule, MaskRule
from tfprune.schedules import ConstantSparsity, PruningSchedule, deserialize, serialize

MISSING_CALLBACK_MESSAGE = (
    "Pruning step is not initialized: add `tfprune.UpdatePruningStep()` to the callbacks of `model.fit`, "
    "or in a custom training loop call `UpdatePruningStep().set_model(model)` and `.on_train_begin()` "
    "before the first training step."
)


def _safe_name(label: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", label)


def validate_block_size(block_size: Any) -> tuple[int, int]:
    """Checks a `(height, width)` block; -1 means the whole dimension."""
    try:
        height, width = (int(d) for d in block_size)
    except (TypeError, ValueError):
        raise ValueError(f"`block_size` must be a pair of integers (height, width); received {block_size!r}.") from None
    for dim in (height, width):
        if dim == 0 or dim < -1:
            raise ValueError(f"`block_size` dims must be -1 (whole dimension) or >= 1; received {block_size!r}.")
    return height, width


def validate_pooling(pooling: Any) -> str:
    """Checks a block pooling type ('AVG' or 'MAX')."""
    value = str(pooling).upper()
    if value not in ("AVG", "MAX"):
        raise ValueError(f"`block_pooling_type` must be 'AVG' or 'MAX'; received {pooling!r}.")
    return value


def validate_schedule(schedule: Any) -> PruningSchedule:
    """A `PruningSchedule` from a schedule, its serialized dict, or None (default 50% constant)."""
    if schedule is None:
        return ConstantSparsity(0.5, begin_step=0)
    if isinstance(schedule, dict):
        schedule = deserialize(schedule)
    if not isinstance(schedule, PruningSchedule):
        raise ValueError(
            "`pruning_schedule` must be a tfprune.PruningSchedule (e.g. tfprune.PolynomialDecay); "
            f"received {type(schedule).__name__}."
        )
    return schedule


def validate_m_by_n(m_by_n: Any) -> tuple[int, int] | None:
    """Checks an `(M, N)` pattern: at least M zeros in every N consecutive weights (tfmot's meaning).

    Example:
        >>> validate_m_by_n((1, 4))   # 1 zero in every 4: 25% sparsity
        (1, 4)
    """
    if m_by_n is None:
        return None
    try:
        m, n = (int(v) for v in m_by_n)
    except (TypeError, ValueError):
        raise ValueError(
            "`sparsity_m_by_n` must be a pair (M, N): at least M zeros in every N consecutive weights, "
            f"such as (2, 4); received {m_by_n!r}."
        ) from None
    if not 0 < m < n:
        raise ValueError(
            f"`sparsity_m_by_n` must satisfy 0 < M < N (at least M zeros in every N weights); received {m_by_n!r}. "
            "Example: (2, 4) for 2:4 sparsity."
        )
    return m, n


def validate_max_layer_sparsity(value: Any) -> float | None:
    """`value` as a float in [0, 1] (or None), else a ValueError naming the range."""
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`max_layer_sparsity` must be a number in [0, 1]; received {value!r}.") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`max_layer_sparsity` must be in [0, 1]; received {value!r}.")
    return value


def _warn_if_m_by_n_keeps_everything(layer_name: str, pairs: list, m_by_n: tuple[int, int]) -> None:
    """Warns about weights whose M-by-N groups (along the input channels) are shorter than what a group
    keeps: such a weight stays dense, as in tfmot, which would otherwise go unnoticed."""
    m, n = m_by_n
    for label, variable in pairs:
        shape = tuple(variable.shape)
        if not shape:
            continue
        length = shape[input_channel_axis(len(shape))]
        if length <= n - m:
            warnings.warn(
                f"Layer '{layer_name}': {label} has {length} input channel(s), no more than the {n - m} that "
                f"every group of sparsity_m_by_n={m_by_n} keeps, so it stays dense. Fix: leave the layer out of "
                "pruning, or prune it without sparsity_m_by_n.", UserWarning, stacklevel=3)


def validate_global(block_size: Any, sparsity_m_by_n: Any, pruning_hparams: Any = None) -> None:
    """Global pruning ranks single weights against one threshold from one schedule: no blocks, no
    M-by-N, and contrib hyper-parameters only where they mean the same (no per-weight sparsities, no
    threshold smoothing, 1x1 blocks)."""
    if sparsity_m_by_n is not None or tuple(block_size) != (1, 1):
        raise ValueError(
            "`global_pruning` ranks single weights across layers; it cannot be combined with "
            "`block_size` or `sparsity_m_by_n`."
        )
    if pruning_hparams is None:
        return
    hp = pruning_hparams
    ignored = [f"{name}={value}" for name, value, default in (
        ("weight_sparsity_map", ",".join(e for e in hp.weight_sparsity_map if e), ""),
        ("block_dims_map", ",".join(e for e in hp.block_dims_map if e), ""),
        ("threshold_decay", hp.threshold_decay, 0.0),
        ("block_height", hp.block_height, 1),
        ("block_width", hp.block_width, 1)) if value != default]
    if ignored:
        raise ValueError(
            f"`global_pruning` ranks every weight against one threshold on the schedule of `target_sparsity`; "
            f"the pruning_hparams {', '.join(ignored)} have no meaning there. Fix: drop them from the "
            "hyper-parameters, or prune per layer (global_pruning=False)."
        )


class UnlinkedGlobalRule(MaskRule):
    """The rule of a global-mode wrapper before `relink_global_pruning` grouped it: training fails loudly."""

    def drives(self, wrapper: Any) -> bool:
        return True

    def training_update(self, wrapper: Any, step: tf.Tensor) -> None:
        raise ValueError(
            f"Wrapper '{wrapper.name}' prunes globally but is not linked to its group: add "
            "`tfprune.UpdatePruningStep()` to the callbacks of `fit`, or call "
            "`tfprune.relink_global_pruning(model)` before a custom training loop."
        )

    update_masks = training_update


def _once_for_all_replicas(fn: Any) -> None:
    """Runs `fn` (a conditional mask update) once, in cross-replica context, under a
    `tf.distribute` strategy: assigning mirrored variables inside `tf.cond` in replica
    context is not supported, and every replica holds the same weights anyway, so the
    masks are computed from the first replica's values and written to all replicas."""
    if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
        tf.distribute.get_replica_context().merge_call(lambda strategy: fn())
    else:
        fn()


@keras.saving.register_keras_serializable(package="tfprune")
class PruneLowMagnitude(keras.layers.Wrapper):
    """Wraps a prunable layer and prunes its weights by magnitude during training.

    Example:
        >>> dense = PruneLowMagnitude(keras.layers.Dense(10), ConstantSparsity(0.5, 0))
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        pruning_schedule: PruningSchedule | dict | None = None,
        block_size: tuple[int, int] = (1, 1),
        block_pooling_type: str = "AVG",
        pruning_hparams: PruningHParams | str | dict | None = None,
        sparsity_m_by_n: tuple[int, int] | None = None,
        global_pruning: bool = False,
        max_layer_sparsity: float | None = None,
        **kwargs: Any,
    ):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(
                f"PruneLowMagnitude wraps a keras.layers.Layer; received {type(layer).__name__}: {layer!r}."
            )
        if isinstance(layer, PruneLowMagnitude):
            raise ValueError(f"Layer '{layer.layer.name}' is already wrapped for pruning; wrap it only once.")
        if not layer_registry.is_prunable(layer):
            raise layer_registry.UnsupportedLayerError(layer_registry.unsupported_message(layer))
        kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
        # `prune_low_magnitude(Conv2D(..., input_shape=...))` as the first layer of a Sequential: the
        # wrapper carries the input shape, as tfmot's does, so the Sequential builds from it.
        inner_shape = getattr(layer, "_input_shape_arg", None)
        if inner_shape is not None and "input_shape" not in kwargs and "batch_input_shape" not in kwargs:
            kwargs["input_shape"] = tuple(inner_shape)
        kwargs["autocast"] = False  # weights and masks are read in their own dtype
        super().__init__(layer, **kwargs)
        self.pruning_schedule = validate_schedule(pruning_schedule)
        self.pruning_hparams = None if pruning_hparams is None else as_hparams(pruning_hparams)
        self.block_size = validate_block_size(block_size)
        self.block_pooling_type = validate_pooling(block_pooling_type)
        self.sparsity_m_by_n = validate_m_by_n(sparsity_m_by_n)
        if self.sparsity_m_by_n and self.block_size != (1, 1):
            raise ValueError("`sparsity_m_by_n` cannot be combined with `block_size`; choose one structure.")
        self.global_pruning = bool(global_pruning) or max_layer_sparsity is not None
        self.max_layer_sparsity = validate_max_layer_sparsity(max_layer_sparsity)
        if self.global_pruning:
            validate_global(self.block_size, self.sparsity_m_by_n)
        # The strategy that updates the masks (tfprune.mask_rules). Global pruning: a
        # tfprune.global_pruning.GlobalPruningGroup, set by relink_global_pruning.
        self.mask_rule: MaskRule = UnlinkedGlobalRule() if self.global_pruning else LayerMaskRule()
        # Set by UpdatePruningStep while `fit` runs training batches: a call without a `training`
        # flag then counts as a training call. Keras does not pass `training` into a subclassed model
        # whose `call` takes no `training` argument, so its layers would never see training=True.
        self.fit_is_training = False

    # Building -------------------------------------------------------------------------
    def build(self, input_shape: Any = None, **shapes: Any) -> None:
        if not self.layer.built:
            if isinstance(self.layer, keras.layers.MultiHeadAttention):
                # called as mha(query, value) or mha(query=..., value=...) (tfmot's example)
                query = shapes.get("query_shape", input_shape)
                value = shapes.get("value_shape", query)
                self.layer.build(query, value, shapes.get("key_shape"))
            elif input_shape is None and len(shapes) == 1:
                self.layer.build(next(iter(shapes.values())))
            else:
                self.layer.build(input_shape, **shapes) if shapes else self.layer.build(input_shape)
        pairs = layer_registry.prunable_weights(self.layer)
        if self.sparsity_m_by_n:
            _warn_if_m_by_n_keeps_everything(self.layer.name, pairs, self.sparsity_m_by_n)
        self.weight_labels = [label for label, _ in pairs]
        self.pruned_weights = [variable for _, variable in pairs]
        self.masks, self.thresholds = [], []
        for label, variable in pairs:
            name = _safe_name(label)
            self.masks.append(
                self.add_weight(
                    name=f"{name}_mask",
                    shape=variable.shape,
                    dtype=variable.dtype,
                    initializer="ones",
                    trainable=False,
                    aggregation="only_first_replica",
                )
            )
            self.thresholds.append(
                self.add_weight(
                    name=f"{name}_threshold",
                    shape=(),
                    dtype="float32",
                    initializer="zeros",
                    trainable=False,
                    aggregation="only_first_replica",
                )
            )
            # Attributes as well as list entries: TensorFlow checkpoints (tf.train.Checkpoint) save what a
            # layer holds in its attributes, not in plain lists.
            setattr(self, f"{name}_mask", self.masks[-1])
            setattr(self, f"{name}_threshold", self.thresholds[-1])
        # -1 means "UpdatePruningStep has not started training"; a wrapper first built inside `fit`
        # (a subclassed model built by its first batch) starts at 0, as on_train_begin would have set it.
        start = 0 if self.fit_is_training else -1
        self.pruning_step = self.add_weight(
            name="pruning_step",
            shape=(),
            dtype="int64",
            initializer=keras.initializers.Constant(start),
            trainable=False,
            aggregation="only_first_replica",
        )
        self.last_update_step = self.add_weight(
            name="last_update_step",
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )
        self._resolve_per_weight_settings()
        if not callable(getattr(type(self.layer), "get_prunable_weights", None)):
            # tfmot gives every built-in layer `get_prunable_weights()`; so does the wrapper
            self.layer.get_prunable_weights = lambda: list(self.pruned_weights)
        self.built = True

    def _resolve_per_weight_settings(self) -> None:
        """Schedule, threshold decay and block shape of each pruned weight."""
        self.weight_paths = [f"{self.layer.name}/{label}" for label in self.weight_labels]
        if self.pruning_hparams is not None:
            hp = self.pruning_hparams
            self.weight_schedules = [hp.schedule_for(path) for path in self.weight_paths]
            self.weight_blocks = [hp.block_dims_for(path) for path in self.weight_paths]
            self.weight_pooling = hp.block_pooling_function
            self.threshold_decay = float(hp.threshold_decay)
        else:
            self.weight_schedules = [self.pruning_schedule] * len(self.weight_paths)
            self.weight_blocks = [self.block_size] * len(self.weight_paths)
            self.weight_pooling = self.block_pooling_type
            self.threshold_decay = 0.0
        if self.threshold_decay > 0 and any(b != (1, 1) for b in self.weight_blocks):
            raise ValueError(
                f"Layer '{self.layer.name}': threshold_decay > 0 is supported only with 1x1 blocks; "
                "set threshold_decay=0 or block dims 1x1."
            )

    @property
    def pruning_vars(self) -> list[tuple[Any, Any, Any]]:
        """`(weight, mask, threshold)` of every pruned weight, as tfmot's wrapper lists them."""
        return list(zip(self.pruned_weights, self.masks, self.thresholds))

    # Training -------------------------------------------------------------------------
    def target_sparsities(self, step: Any = None) -> list[tf.Tensor]:
        """The scheduled sparsity of each pruned weight at `step` (default: the current step)."""
        step = self.pruning_step if step is None else step
        return [schedule(step)[1] for schedule in self.weight_schedules]

    def update_masks(self, step: Any, sparsities: list[Any] | None = None) -> None:
        """Recomputes every mask now through `mask_rule` (no schedule check) and zeroes pruned weights."""
        self.mask_rule.update_masks(self, step, sparsities)

    def _training_update(self) -> None:
        self.pruning_step.assign_add(1)
        step = tf.convert_to_tensor(self.pruning_step)
        tf.debugging.assert_greater_equal(step, tf.constant(1, tf.int64), message=MISSING_CALLBACK_MESSAGE)
        rule = self.mask_rule
        if rule.drives(self):
            _once_for_all_replicas(lambda: rule.training_update(self, tf.convert_to_tensor(self.pruning_step)))

    def apply_masks(self) -> None:
        """Zeroes the stored weights at pruned positions (`weight = weight * mask`)."""
        for weight, mask in zip(self.pruned_weights, self.masks):
            weight.assign(tf.convert_to_tensor(weight) * tf.convert_to_tensor(mask))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.built and not args and isinstance(self.layer, keras.layers.MultiHeadAttention):
            # keyword-only call (`mha(query=x, value=x)`): Keras builds from positional inputs only
            shapes = {f"{name}_shape": tuple(kwargs[name].shape) for name in ("query", "value", "key")
                      if kwargs.get(name) is not None}
            self.build(**shapes)
        return super().__call__(*args, **kwargs)

    def call(self, inputs: Any = None, *args: Any, training: Any = None, **kwargs: Any) -> Any:
        if training is None and self.fit_is_training:
            self._training_update()
        elif training is not None and not isinstance(training, bool):

            def conditional_update(flag: Any) -> None:
                tf.cond(tf.cast(flag, tf.bool), lambda: (self._training_update(), tf.constant(0))[1],
                        lambda: tf.constant(0))

            if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
                # No merge_call inside tf.cond: branch on the first replica's flag in cross-replica context.
                tf.distribute.get_replica_context().merge_call(
                    lambda strategy, flag: conditional_update(strategy.experimental_local_results(flag)[0]),
                    args=(training,),
                )
            else:
                conditional_update(training)
        elif training:
            self._training_update()
        mapping = [
            (weight, tf.convert_to_tensor(weight) * tf.convert_to_tensor(mask))
            for weight, mask in zip(self.pruned_weights, self.masks)
        ]
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            positional = (inputs,) + args if inputs is not None else args  # keyword-only calls (query=...)
            outputs = self.layer(*positional, training=training, **kwargs)
        self._apply_scope_updates(scope)
        return outputs

    def _apply_scope_updates(self, scope: keras.StatelessScope) -> None:
        """Carries over state the wrapped layer changed (e.g. RNG seeds) and its losses."""
        pruned = {id(v) for v in self.pruned_weights}
        for variable in self.layer.variables:
            if id(variable) in pruned:
                continue
            value = scope.get_current_value(variable)
            if value is not None:
                variable.assign(value)
        for loss in scope.losses:
            self.add_loss(loss)

    # Saving ---------------------------------------------------------------------------
    def save_own_variables(self, store: Any) -> None:
        if self.built:
            self.apply_masks()  # checkpoints always hold exact zeros at pruned positions
        super().save_own_variables(store)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "pruning_schedule": serialize(self.pruning_schedule),
                "block_size": list(self.block_size),
                "block_pooling_type": self.block_pooling_type,
                "pruning_hparams": None if self.pruning_hparams is None else self.pruning_hparams.values(),
                "sparsity_m_by_n": None if self.sparsity_m_by_n is None else list(self.sparsity_m_by_n),
                "global_pruning": self.global_pruning,
                "max_layer_sparsity": self.max_layer_sparsity,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict, custom_objects: Any = None) -> "PruneLowMagnitude":
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"), custom_objects=custom_objects)
        config.pop("autocast", None)
        return cls(layer, **config)

    # Inspection -----------------------------------------------------------------------
    def masked_weight_values(self) -> list[Any]:
        """The wrapped layer's weights (numpy) with masks applied, in `layer.weights` order."""
        masks = {id(w): m for w, m in zip(self.pruned_weights, self.masks)}
        values = []
        for variable in self.layer.weights:
            value = keras.ops.convert_to_numpy(variable)
            if id(variable) in masks:
                value = value * keras.ops.convert_to_numpy(masks[id(variable)])
            values.append(value)
        return values
