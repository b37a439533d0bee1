"""TF1 `contrib.model_pruning` hyper-parameters, parsed and turned into schedules.

Example:
    >>> hparams = get_pruning_hparams().parse(
    ...     "begin_pruning_step=0,end_pruning_step=-1,threshold_decay=0.9,pruning_frequency=10,"
    ...     "target_sparsity=0.5,sparsity_function_end_step=1000")
    >>> model = tfprune.prune_low_magnitude(model, pruning_hparams=hparams)

How these differ from tfmot's schedules:
- Frequency: contrib updates masks when `last_update_step + pruning_frequency <= step`
  (the last update is remembered per layer, starting at 0); tfmot prunes when
  `(step - begin_step) % frequency == 0`.
- Window: contrib has a pruning window (`begin/end_pruning_step`) separate from the
  sparsity-function window (`sparsity_function_begin/end_step`); tfmot uses one.
- Threshold: contrib smooths thresholds (`threshold_decay`) and masks `|w| >= threshold`.
"""

from __future__ import annotations

import math
import re
from typing import Any

import keras
import tensorflow as tf

from tfprune.schedules import PruningSchedule, _check_int, _check_sparsity

_DEFAULTS: dict[str, Any] = {
    "name": "model_pruning",
    "begin_pruning_step": 0,
    "end_pruning_step": -1,
    "weight_sparsity_map": [""],
    "block_dims_map": [""],
    "threshold_decay": 0.0,
    "pruning_frequency": 10,
    "nbins": 256,
    "block_height": 1,
    "block_width": 1,
    "block_pooling_function": "AVG",
    "initial_sparsity": 0.0,
    "target_sparsity": 0.5,
    "sparsity_function_begin_step": 0,
    "sparsity_function_end_step": 100,
    "sparsity_function_exponent": 3.0,
    "use_tpu": False,
}

_RANGES = {
    "begin_pruning_step": "an integer >= 0",
    "end_pruning_step": "-1 (prune until training stops) or an integer > begin_pruning_step",
    "threshold_decay": "a float in [0, 1)",
    "pruning_frequency": "an integer >= 1",
    "nbins": "an integer >= 1",
    "block_height": "-1 (whole dimension) or an integer >= 1",
    "block_width": "-1 (whole dimension) or an integer >= 1",
    "block_pooling_function": "'AVG' or 'MAX'",
    "initial_sparsity": "a float in [0, 1)",
    "target_sparsity": "a float in [0, 1)",
    "sparsity_function_begin_step": "an integer >= 0",
    "sparsity_function_end_step": "an integer > sparsity_function_begin_step",
    "sparsity_function_exponent": "a float > 0",
    "weight_sparsity_map": "a list like [regex:0.9,other/kernel:0.8] with sparsities in [0, 1)",
    "block_dims_map": "a list like [regex:4x4,dense2:1x16] with dims -1 or >= 1",
}


def _split_top_level(text: str) -> list[str]:
    """Splits on commas that are not inside [...]."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"Unbalanced ']' in hparams string {text!r}.")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise ValueError(f"Unbalanced '[' in hparams string {text!r}.")
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _bad(key: str, value: Any) -> ValueError:
    return ValueError(f"Invalid value {value!r} for hparam '{key}': expected {_RANGES.get(key, 'a valid value')}.")


def _coerce(key: str, value: Any) -> Any:
    default = _DEFAULTS[key]
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
        raise ValueError(f"Invalid value {value!r} for hparam '{key}': expected true or false.")
    if isinstance(default, int):
        if isinstance(value, bool):
            raise _bad(key, value)
        number = None
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str):
            try:
                number = int(value.strip())
            except ValueError:  # also digit strings beyond Python's int conversion limit
                pass
        if number is None or not -(2**63) <= number < 2**63:  # steps are int64 tensors
            raise _bad(key, value)
        return number
    if isinstance(default, float):
        if isinstance(value, bool):
            raise _bad(key, value)
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise _bad(key, value) from None
        if not math.isfinite(number):
            raise _bad(key, value)
        return number
    if isinstance(default, list):
        if isinstance(value, (list, tuple)):
            return [str(v).strip() for v in value]
        value = str(value).strip()
        if value.startswith("[") and value.endswith("]"):
            value = value[1:-1]
        items = [v.strip() for v in value.split(",")]
        return items if any(items) else [""]
    return str(value).strip() if isinstance(value, str) else value


def _parse_weight_sparsity_map(entries: list[str]) -> list[tuple[str, float]]:
    result = []
    for entry in entries:
        if not entry:
            continue
        pattern, sep, value = entry.rpartition(":")
        if not sep or not pattern:
            raise ValueError(
                f"Invalid weight_sparsity_map entry {entry!r}: expected 'regex:sparsity', e.g. 'conv1:0.9'."
            )
        try:
            re.compile(pattern)
        except (re.error, OverflowError, RecursionError) as err:
            raise ValueError(f"Invalid regex {pattern!r} in weight_sparsity_map: {err}.") from None
        try:
            sparsity = float(value)
        except (ValueError, OverflowError):
            raise _bad("weight_sparsity_map", entry) from None
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(
                f"Invalid sparsity {sparsity} for {pattern!r} in weight_sparsity_map: expected a float in [0, 1)."
            )
        result.append((pattern, sparsity))
    return result


def _parse_block_dims_map(entries: list[str]) -> list[tuple[str, tuple[int, int]]]:
    result = []
    for entry in entries:
        if not entry:
            continue
        pattern, sep, dims = entry.rpartition(":")
        match = re.fullmatch(r"\s*(-?\d+)\s*x\s*(-?\d+)\s*", dims)
        if not sep or not pattern or not match:
            raise ValueError(
                f"Invalid block_dims_map entry {entry!r}: expected 'regex:HEIGHTxWIDTH', e.g. 'dense1:4x4'."
            )
        try:
            re.compile(pattern)
        except (re.error, OverflowError, RecursionError) as err:
            raise ValueError(f"Invalid regex {pattern!r} in block_dims_map: {err}.") from None
        height, width = int(match.group(1)), int(match.group(2))
        for dim in (height, width):
            if dim == 0 or dim < -1:
                raise ValueError(f"Invalid block dims {dims!r} for {pattern!r}: each must be -1 or >= 1.")
        result.append((pattern, (height, width)))
    return result


class PruningHParams:
    """The contrib hyper-parameters: attribute access, `parse("k=v,...")`, `values()`.

    Example:
        >>> hp = PruningHParams().parse("target_sparsity=0.8,pruning_frequency=5")
        >>> hp.target_sparsity
        0.8
    """

    def __init__(self, **overrides: Any):
        object.__setattr__(self, "_values", dict(_DEFAULTS))
        self.override(**overrides)

    def __getattr__(self, key: str) -> Any:
        values = object.__getattribute__(self, "_values")
        if key in values:
            return values[key]
        raise AttributeError(f"Unknown pruning hparam '{key}'. Known: {', '.join(sorted(values))}.")

    def __setattr__(self, key: str, value: Any) -> None:
        self.override(**{key: value})

    def override(self, **overrides: Any) -> "PruningHParams":
        """Sets several hparams at once (validated); returns self."""
        new_values = dict(self._values)
        for key, value in overrides.items():
            if key not in _DEFAULTS:
                raise ValueError(f"Unknown pruning hparam '{key}'. Known: {', '.join(sorted(_DEFAULTS))}.")
            new_values[key] = _coerce(key, value)
        _validate(new_values)
        object.__setattr__(self, "_values", new_values)
        return self

    def parse(self, text: str) -> "PruningHParams":
        """Parses `"key=value,key=[a:0.9,b:0.8],..."` into this object; returns self."""
        if not isinstance(text, str):
            raise ValueError(f"hparams must be a 'key=value,...' string; received {type(text).__name__}.")
        overrides: dict[str, Any] = {}
        for item in _split_top_level(text):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep:
                raise ValueError(f"Malformed hparams entry {item!r}: expected 'key=value'.")
            if key not in _DEFAULTS:
                raise ValueError(f"Unknown pruning hparam '{key}'. Known: {', '.join(sorted(_DEFAULTS))}.")
            overrides[key] = value.strip()
        return self.override(**overrides)

    def values(self) -> dict[str, Any]:
        """A copy of all hparams as a dict."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._values.items()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PruningHParams) and other.values() == self.values()

    def __repr__(self) -> str:
        changed = {k: v for k, v in self._values.items() if v != _DEFAULTS[k]}
        return f"PruningHParams({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    # Resolution per weight ---------------------------------------------------------------
    def target_sparsity_for(self, weight_path: str) -> float:
        """The target sparsity of one weight (`weight_sparsity_map` entries override)."""
        matches = [s for p, s in _parse_weight_sparsity_map(self.weight_sparsity_map) if re.search(p, weight_path)]
        if len(matches) > 1:
            raise ValueError(
                f"Weight '{weight_path}' matches {len(matches)} weight_sparsity_map entries; make the regexes "
                "exclusive so each weight matches at most one."
            )
        return matches[0] if matches else self.target_sparsity

    def block_dims_for(self, weight_path: str) -> tuple[int, int]:
        """The `(height, width)` block of one weight (`block_dims_map` entries override)."""
        matches = [d for p, d in _parse_block_dims_map(self.block_dims_map) if re.search(p, weight_path)]
        if len(matches) > 1:
            raise ValueError(
                f"Weight '{weight_path}' matches {len(matches)} block_dims_map entries; make the regexes exclusive."
            )
        return matches[0] if matches else (self.block_height, self.block_width)

    def schedule_for(self, weight_path: str) -> "ContribSchedule":
        """The schedule of one weight."""
        return ContribSchedule(
            begin_pruning_step=self.begin_pruning_step,
            end_pruning_step=self.end_pruning_step,
            pruning_frequency=self.pruning_frequency,
            initial_sparsity=self.initial_sparsity,
            target_sparsity=self.target_sparsity_for(weight_path),
            sparsity_function_begin_step=self.sparsity_function_begin_step,
            sparsity_function_end_step=self.sparsity_function_end_step,
            sparsity_function_exponent=self.sparsity_function_exponent,
        )


def _validate(v: dict[str, Any]) -> None:
    def check(ok: bool, key: str) -> None:
        if not ok:
            raise _bad(key, v[key])

    check(v["begin_pruning_step"] >= 0, "begin_pruning_step")
    check(v["end_pruning_step"] == -1 or v["end_pruning_step"] > v["begin_pruning_step"], "end_pruning_step")
    check(0.0 <= v["threshold_decay"] < 1.0, "threshold_decay")
    check(v["pruning_frequency"] >= 1, "pruning_frequency")
    check(v["nbins"] >= 1, "nbins")
    check(v["block_height"] == -1 or v["block_height"] >= 1, "block_height")
    check(v["block_width"] == -1 or v["block_width"] >= 1, "block_width")
    v["block_pooling_function"] = str(v["block_pooling_function"]).upper()
    check(v["block_pooling_function"] in ("AVG", "MAX"), "block_pooling_function")
    check(0.0 <= v["initial_sparsity"] < 1.0, "initial_sparsity")
    check(0.0 <= v["target_sparsity"] < 1.0, "target_sparsity")
    check(v["sparsity_function_begin_step"] >= 0, "sparsity_function_begin_step")
    check(v["sparsity_function_end_step"] > v["sparsity_function_begin_step"], "sparsity_function_end_step")
    check(v["sparsity_function_exponent"] > 0, "sparsity_function_exponent")
    _parse_weight_sparsity_map(v["weight_sparsity_map"])
    _parse_block_dims_map(v["block_dims_map"])


def get_pruning_hparams() -> PruningHParams:
    """The contrib defaults (r1.15 names and values), ready for `.parse(...)`.

    Example:
        >>> hparams = get_pruning_hparams().parse("target_sparsity=0.8,sparsity_function_end_step=1000")
        >>> hparams.target_sparsity
        0.8
        >>> pruned = tfprune.prune_low_magnitude(model, pruning_hparams=hparams)
    """
    return PruningHParams()


def as_hparams(value: Any) -> PruningHParams:
    """Accepts a `PruningHParams`, a `"k=v,..."` string or a dict."""
    if isinstance(value, PruningHParams):
        return value
    if isinstance(value, str):
        return get_pruning_hparams().parse(value)
    if isinstance(value, dict):
        return PruningHParams(**value)
    raise ValueError(
        f"`pruning_hparams` must be a PruningHParams, a 'key=value,...' string or a dict; received {type(value).__name__}."
    )


@keras.saving.register_keras_serializable(package="tfprune")
class ContribSchedule(PruningSchedule):
    """contrib's schedule for one weight: polynomial sparsity, last-update frequency rule.

    `sparsity(t) = target + (initial - target) * (1 - p) ** exponent`, with
    `p = clip((t - f_begin) / (f_end - f_begin), 0, 1)`; masks update when
    `begin <= t`, (`end < 0` or `t <= end`) and `last_update_step + frequency <= t`.

    Example:
        >>> schedule = ContribSchedule(target_sparsity=0.8, sparsity_function_end_step=100)
        >>> round(float(schedule.sparsity(50)), 4)
        0.7
        >>> bool(schedule.should_update(10, last_update_step=0))
        True
    """

    uses_last_update_step = True

    def __init__(
        self,
        begin_pruning_step: int = 0,
        end_pruning_step: int = -1,
        pruning_frequency: int = 10,
        initial_sparsity: float = 0.0,
        target_sparsity: float = 0.5,
        sparsity_function_begin_step: int = 0,
        sparsity_function_end_step: int = 100,
        sparsity_function_exponent: float = 3.0,
    ):
        self.begin_pruning_step = _check_int("begin_pruning_step", begin_pruning_step)
        self.end_pruning_step = _check_int("end_pruning_step", end_pruning_step)
        self.pruning_frequency = _check_int("pruning_frequency", pruning_frequency)
        self.initial_sparsity = _check_sparsity("initial_sparsity", initial_sparsity)
        self.target_sparsity = _check_sparsity("target_sparsity", target_sparsity)
        self.sparsity_function_begin_step = _check_int("sparsity_function_begin_step", sparsity_function_begin_step)
        self.sparsity_function_end_step = _check_int("sparsity_function_end_step", sparsity_function_end_step)
        try:
            self.sparsity_function_exponent = float(sparsity_function_exponent)
        except (TypeError, ValueError, OverflowError):
            self.sparsity_function_exponent = math.nan
        if (isinstance(sparsity_function_exponent, bool) or not math.isfinite(self.sparsity_function_exponent)
                or self.sparsity_function_exponent <= 0):
            raise _bad_schedule("sparsity_function_exponent", "a finite number > 0 (as the hparams parser requires)")
        if self.sparsity_function_end_step <= self.sparsity_function_begin_step:
            raise _bad_schedule("sparsity_function_end_step", "> sparsity_function_begin_step")
        if self.pruning_frequency < 1:
            raise _bad_schedule("pruning_frequency", ">= 1")

    def sparsity(self, step: Any) -> tf.Tensor:
        """The target sparsity at `step` (float32 tensor)."""
        begin, end = self.sparsity_function_begin_step, self.sparsity_function_end_step
        p = tf.cast(tf.cast(step, tf.int64) - begin, tf.float32) / float(end - begin)
        p = tf.minimum(1.0, tf.maximum(0.0, p))
        return self.target_sparsity + (self.initial_sparsity - self.target_sparsity) * tf.pow(
            1.0 - p, self.sparsity_function_exponent
        )

    def in_pruning_range(self, step: Any) -> tf.Tensor:
        """`begin_pruning_step <= step` and (`end_pruning_step < 0` or `step <= end_pruning_step`)."""
        step = tf.cast(step, tf.int64)
        after_begin = tf.greater_equal(step, self.begin_pruning_step)
        if self.end_pruning_step < 0:
            return after_begin
        return tf.logical_and(after_begin, tf.less_equal(step, self.end_pruning_step))

    def should_update(self, step: Any, last_update_step: Any) -> tf.Tensor:
        """contrib's rule: in range and `last_update_step + pruning_frequency <= step`."""
        step = tf.cast(step, tf.int64)
        due = tf.less_equal(tf.cast(last_update_step, tf.int64) + self.pruning_frequency, step)
        return tf.logical_and(self.in_pruning_range(step), due)

    def __call__(self, step: Any) -> tuple[tf.Tensor, tf.Tensor]:
        """`(in pruning range, sparsity)`; the frequency rule needs `should_update`."""
        return self.in_pruning_range(step), self.sparsity(step)

    def get_config(self) -> dict:
        return {
            "begin_pruning_step": self.begin_pruning_step,
            "end_pruning_step": self.end_pruning_step,
            "pruning_frequency": self.pruning_frequency,
            "initial_sparsity": self.initial_sparsity,
            "target_sparsity": self.target_sparsity,
            "sparsity_function_begin_step": self.sparsity_function_begin_step,
            "sparsity_function_end_step": self.sparsity_function_end_step,
            "sparsity_function_exponent": self.sparsity_function_exponent,
        }


def _bad_schedule(key: str, expected: str) -> ValueError:
    return ValueError(f"`{key}` must be {expected}.")
