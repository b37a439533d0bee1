"""Network slimming (Liu et al. 2017): an L1 penalty on BatchNormalization scales during training.

Training with `BNSparsity` pushes the |gamma| of unimportant channels towards zero; afterwards
`prune_filters(model, ratio, importance="bn_scale", global_pruning=True)` removes the channels with
the smallest |gamma| across the whole network, and a short fine-tune recovers the accuracy.

Example:
    >>> model.fit(x, y, epochs=10, callbacks=[BNSparsity(strength=1e-4)])
    >>> pruned, report = prune_filters(model, 0.5, importance="bn_scale", global_pruning=True)
"""

from __future__ import annotations

from typing import Any, Iterable

import keras
import numpy as np

from tfprune.keras_graph import iter_layers


def _check_strength(strength: Any) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not strength >= 0:
        raise ValueError(
            f"BN sparsity strength must be a number >= 0, received {strength!r}. "
            "Fix: use a small value such as 1e-4 (network slimming uses 1e-5 to 1e-4)."
        )
    return float(strength)


def batchnorm_layers(model: keras.Model, layers: Iterable[Any] | None = None) -> list:
    """The BatchNormalization layers of `model` (nested models included) that have a scale (gamma).

    With `layers` (layers or names) only those are returned; a name that is not a scaled
    BatchNormalization layer of the model raises ValueError.
    """
    found = [layer for layer in iter_layers(model)
             if isinstance(layer, keras.layers.BatchNormalization) and getattr(layer, "gamma", None) is not None]
    if layers is None:
        return found
    wanted = {getattr(item, "name", item) for item in layers}
    by_name = {layer.name: layer for layer in found}
    missing = sorted(wanted - set(by_name))
    if missing:
        raise ValueError(
            f"{missing} are not BatchNormalization layers with scale=True in model {model.name!r}. "
            f"Fix: choose among {sorted(by_name)[:10]}{' ...' if len(by_name) > 10 else ''}."
        )
    return [by_name[name] for name in sorted(wanted)]


def bn_l1_penalty(model: keras.Model, strength: float = 1e-4, layers: Iterable[Any] | None = None) -> Any:
    """strength * sum(|gamma|) over the model's BatchNormalization layers, for custom training loops.

    Example:
        >>> with tf.GradientTape() as tape:
        ...     loss = loss_fn(y, model(x, training=True)) + bn_l1_penalty(model, 1e-4)
    """
    strength = _check_strength(strength)
    gammas = [layer.gamma for layer in batchnorm_layers(model, layers)]
    if not gammas:
        return keras.ops.zeros(())
    return strength * keras.ops.sum(keras.ops.stack([keras.ops.sum(keras.ops.abs(g)) for g in gammas]))


def gamma_summary(model: keras.Model, thresholds: tuple[float, ...] = (1e-2, 1e-1)) -> dict[str, float]:
    """Mean |gamma| and the share of |gamma| below each threshold, over all BatchNormalization layers.

    Example:
        >>> gamma_summary(model)   # {'channels': 1184.0, 'mean_abs_gamma': 0.41, 'below_0.01': 0.12, ...}
    """
    values = [np.abs(np.asarray(layer.gamma)).ravel() for layer in batchnorm_layers(model)]
    flat = np.concatenate(values) if values else np.zeros(0)
    out = {"channels": float(len(flat)), "mean_abs_gamma": float(flat.mean()) if len(flat) else 0.0}
    for t in thresholds:
        out[f"below_{t:g}"] = float((flat < t).mean()) if len(flat) else 0.0
    return out


class BNSparsity(keras.callbacks.Callback):
    """Adds `strength * sum(|gamma|)` of every BatchNormalization layer to the training loss.

    The penalty is attached as a weight regularizer of each gamma for the duration of `fit` (the
    train function is rebuilt so that the penalty is part of it) and removed when `fit` ends, so
    later training, evaluation and saving are unaffected. Gammas that already carry a regularizer
    keep it and are penalised in addition. After an interrupted `fit`, call `remove_bn_sparsity(model)`
    (the next `fit` with a BNSparsity callback also cleans up first).

    Args:
        strength: the L1 coefficient (the paper's `s`; 1e-5 to 1e-4 for CIFAR-sized networks).
        layers: restrict the penalty to these BatchNormalization layers (layers or names).

    Example:
        >>> model.fit(x, y, epochs=20, callbacks=[BNSparsity(1e-4)])
        >>> gamma_summary(model)     # how many |gamma| are already near zero
    """

    def __init__(self, strength: float = 1e-4, layers: Iterable[Any] | None = None) -> None:
        super().__init__()
        self.strength = _check_strength(strength)
        self.layers = None if layers is None else list(layers)

    def on_train_begin(self, logs: dict | None = None) -> None:
        bns = batchnorm_layers(self.model, self.layers)
        if not bns:
            raise ValueError(
                f"BNSparsity found no BatchNormalization layer with scale=True in model {self.model.name!r}. "
                "Fix: network slimming needs BatchNormalization after the convolutions to prune."
            )
        remove_bn_sparsity(self.model)  # left over by an interrupted fit
        for layer in bns:
            variable = layer.gamma
            variable.regularizer = _Penalty(self.strength, variable.regularizer)
        self.model.make_train_function(force=True)

    def on_train_end(self, logs: dict | None = None) -> None:
        remove_bn_sparsity(self.model)


class _Penalty:
    """strength * sum|x|, added to the regularizer the variable had before (restored on removal)."""

    def __init__(self, strength: float, previous: Any) -> None:
        self.strength, self.previous = strength, previous

    def __call__(self, x):
        penalty = self.strength * keras.ops.sum(keras.ops.abs(x))
        return penalty if self.previous is None else penalty + self.previous(x)


def remove_bn_sparsity(model: keras.Model) -> int:
    """Remove the BNSparsity penalty from every gamma of `model` (their own regularizers stay).

    `BNSparsity` removes it when `fit` ends; call this after a `fit` that was interrupted (an
    exception or Ctrl-C skips `on_train_end`), before training or evaluating the model further.
    Returns how many gammas were cleaned; rebuilds the train function if it had one.

    Example:
        >>> try:
        ...     model.fit(x, y, epochs=10, callbacks=[BNSparsity(1e-4)])
        ... except KeyboardInterrupt:
        ...     remove_bn_sparsity(model)
    """
    cleaned = 0
    for layer in batchnorm_layers(model):
        while isinstance(layer.gamma.regularizer, _Penalty):
            layer.gamma.regularizer = layer.gamma.regularizer.previous
            cleaned += 1
    if cleaned and getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)
    return cleaned
