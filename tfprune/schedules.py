"""Pruning schedules: for a training step, "prune now?" and "to what sparsity?".

The two classes mirror tfmot's `PolynomialDecay` and `ConstantSparsity` step for
step, so a tfmot user gets identical masks-update steps and sparsity targets.

Example:
    >>> schedule = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000)
    >>> should_prune, sparsity = schedule(100)
"""

from __future__ import annotations

import abc
import math
from typing import Any

import keras
import tensorflow as tf


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        hasattr(value, "__index__") and not isinstance(value, float)
    ):
        raise ValueError(f"`{name}` must be an integer; received {value!r}.")
    value = int(value)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"`{name}` must fit in int64 (steps are int64 tensors); received {value}.")
    return value


def _check_sparsity(name: str, value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"`{name}` must be a number in [0, 1); received {value!r}.") from None
    if not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be in the range [0, 1); received {value}.")
    return value


def _check_steps(begin_step: Any, end_step: Any, frequency: Any, allow_end_minus_one: bool) -> tuple[int, int, int]:
    begin_step = _check_int("begin_step", begin_step)
    end_step = _check_int("end_step", end_step)
    frequency = _check_int("frequency", frequency)
    if begin_step < 0:
        raise ValueError(f"`begin_step` must be >= 0; received {begin_step}.")
    if end_step == -1 and not allow_end_minus_one:
        raise ValueError("`end_step` must be a step >= begin_step for this schedule; -1 is not allowed.")
    if end_step != -1:
        if end_step < 0:
            raise ValueError(f"`end_step` must be -1 (never stop) or >= 0; received {end_step}.")
        if end_step < begin_step:
            raise ValueError(
                f"`end_step` ({end_step}) must be >= `begin_step` ({begin_step}), or -1 to prune until training stops."
            )
    if frequency <= 0:
        raise ValueError(f"`frequency` must be > 0; received {frequency}.")
    return begin_step, end_step, frequency


class PruningSchedule(abc.ABC):
    """Base class: `schedule(step) -> (should_prune, sparsity)` as tensors.

    Subclasses implement `__call__` and `get_config`; both results must be
    computable inside `tf.function` (and under XLA).

    Example:
        >>> @keras.saving.register_keras_serializable()
        ... class Step(tfprune.PruningSchedule):
        ...     def __init__(self, at=100, sparsity=0.5):
        ...         self.at, self.sparsity = at, sparsity
        ...     def __call__(self, step):
        ...         return tf.equal(step, self.at), tf.constant(self.sparsity, tf.float32)
        ...     def get_config(self):
        ...         return {"at": self.at, "sparsity": self.sparsity}
        >>> pruned = tfprune.prune_low_magnitude(model, pruning_schedule=Step(at=100))
    """

    @abc.abstractmethod
    def __call__(self, step: Any) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns `(should_prune: bool tensor, sparsity: float32 tensor)` for `step`."""

    @abc.abstractmethod
    def get_config(self) -> dict:
        """Returns the constructor arguments."""

    #: True when `should_update` depends on the step of the last mask update.
    uses_last_update_step = False

    def should_update(self, step: Any, last_update_step: Any) -> tf.Tensor:
        """Whether masks are recomputed at `step` (default: the first element of `self(step)`)."""
        del last_update_step
        return self(step)[0]

    @classmethod
    def from_config(cls, config: dict) -> "PruningSchedule":
        """Rebuilds a schedule from `get_config()` output."""
        return cls(**config)

    @staticmethod
    def _should_prune_in_step(step: Any, begin_step: int, end_step: int, frequency: int) -> tf.Tensor:
        step = tf.cast(step, tf.int64)
        in_range = tf.logical_and(
            tf.greater_equal(step, begin_step),
            tf.logical_or(tf.less_equal(step, end_step), tf.less(tf.constant(end_step, tf.int64), 0)),
        )
        is_turn = tf.equal(tf.math.floormod(step - begin_step, frequency), 0)
        return tf.logical_and(in_range, is_turn)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="tfprune")
class ConstantSparsity(PruningSchedule):
    """Prunes to `target_sparsity` every `frequency` steps in `[begin_step, end_step]`.

    Example:
        >>> ConstantSparsity(0.5, begin_step=0, frequency=100)(200)  # (True, 0.5)
    """

    def __init__(self, target_sparsity: float, begin_step: int, end_step: int = -1, frequency: int = 100):
        self.target_sparsity = _check_sparsity("target_sparsity", target_sparsity)
        self.begin_step, self.end_step, self.frequency = _check_steps(begin_step, end_step, frequency, True)

    def __call__(self, step: Any) -> tuple[tf.Tensor, tf.Tensor]:
        return (
            self._should_prune_in_step(step, self.begin_step, self.end_step, self.frequency),
            tf.constant(self.target_sparsity, dtype=tf.float32),
        )

    def get_config(self) -> dict:
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }


@keras.saving.register_keras_serializable(package="tfprune")
class PolynomialDecay(PruningSchedule):
    """Sparsity rises from `initial_sparsity` to `final_sparsity` between `begin_step` and `end_step`.

    `sparsity(t) = final + (initial - final) * (1 - p) ** power`, with
    `p = clip((t - begin_step) / (end_step - begin_step), 0, 1)`; masks are
    updated when `(t - begin_step) % frequency == 0` inside the window.

    Example:
        >>> PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000, frequency=100)(500)
    """

    def __init__(
        self,
        initial_sparsity: float,
        final_sparsity: float,
        begin_step: int,
        end_step: int,
        power: float = 3,
        frequency: int = 100,
    ):
        self.initial_sparsity = _check_sparsity("initial_sparsity", initial_sparsity)
        self.final_sparsity = _check_sparsity("final_sparsity", final_sparsity)
        self.begin_step, self.end_step, self.frequency = _check_steps(begin_step, end_step, frequency, False)
        if isinstance(power, bool) or not isinstance(power, (int, float)) or not math.isfinite(power):
            raise ValueError(f"`power` must be a finite number; received {power!r}.")
        self.power = power

    def __call__(self, step: Any) -> tuple[tf.Tensor, tf.Tensor]:
        span = self.end_step - self.begin_step
        # A zero-length window jumps straight to the final sparsity (p = 1 from begin_step on).
        progress = tf.cast(tf.cast(step, tf.int64) - self.begin_step, tf.float32) / (span if span else 1e-30)
        progress = tf.minimum(1.0, tf.maximum(0.0, progress))
        sparsity = (self.initial_sparsity - self.final_sparsity) * tf.pow(1.0 - progress, self.power)
        sparsity = sparsity + self.final_sparsity
        return self._should_prune_in_step(step, self.begin_step, self.end_step, self.frequency), sparsity

    def get_config(self) -> dict:
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }


def serialize(schedule: PruningSchedule) -> dict:
    """Serializes a schedule through Keras (`keras.saving.serialize_keras_object`).

    Built-in and user schedules registered with `@keras.saving.register_keras_serializable()` reload
    with `deserialize`, also inside a saved model.

    Example:
        >>> deserialize(serialize(ConstantSparsity(0.5, 0)))   # ConstantSparsity(target_sparsity=0.5, ...)
    """
    return keras.saving.serialize_keras_object(schedule)


_BUILTIN = {"ConstantSparsity": ConstantSparsity, "PolynomialDecay": PolynomialDecay}


def _unknown(name: Any) -> ValueError:
    return ValueError(
        f"Unknown pruning schedule {name!r}. Fix: decorate its class with "
        "`@keras.saving.register_keras_serializable()` and import the module that defines it before loading."
    )


def deserialize(config: dict | PruningSchedule) -> PruningSchedule:
    """Inverse of `serialize`: a schedule from its Keras serialization (or the earlier
    `{"class_name", "config"}` form, resolved by class name).

    Example:
        >>> deserialize({"class_name": "ConstantSparsity", "config": {"target_sparsity": 0.5, "begin_step": 0}})
    """
    if isinstance(config, PruningSchedule):
        return config
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"A serialized pruning schedule is a dict with a 'class_name'; received {config!r}.")
    name = config["class_name"]
    if "registered_name" in config or "module" in config:
        try:
            schedule = keras.saving.deserialize_keras_object(config)
        except (TypeError, ValueError, ImportError, AttributeError) as err:
            raise _unknown(config.get("registered_name", name)) from err
    else:
        cls = _BUILTIN.get(name) or keras.saving.get_registered_object(name) or keras.saving.get_registered_object(
            f"tfprune>{name}"
        )
        if cls is None:
            raise _unknown(name)
        schedule = cls.from_config(config.get("config") or {})
    if not isinstance(schedule, PruningSchedule):
        raise ValueError(f"{name!r} is not a tfprune.PruningSchedule (received {type(schedule).__name__}).")
    return schedule
