"""Continue training after physical pruning: a fresh optimizer compiled like the original model.

A pruned model has new, smaller variables. The original optimizer's slots (momentum, Adam moments)
belong to the old variables and cannot follow them: Keras refuses to apply an optimizer to variables
it was not built for. `compile_like(pruned, original)` compiles the pruned model with a new
optimizer of the same class and settings (learning rate, schedule, ...), the same loss and metrics,
and no optimizer state.

Example:
    >>> pruned, report = prune_filters(model, 0.5)
    >>> compile_like(pruned, model)                 # same optimizer settings, fresh state
    >>> pruned.fit(x, y, epochs=2)
"""

from __future__ import annotations

import keras


def compile_like(
    pruned: keras.Model,
    original: keras.Model,
    learning_rate: "float | keras.optimizers.schedules.LearningRateSchedule | None" = None,
) -> keras.Model:
    """Compile `pruned` with `original`'s compile settings and a fresh optimizer; returns `pruned`.

    Args:
        pruned: the (uncompiled) model returned by pruning.
        original: a compiled model whose optimizer settings, loss and metrics are copied.
        learning_rate: optionally a new learning rate for fine-tuning: a number or a
            `keras.optimizers.schedules.LearningRateSchedule`. By default the original settings are
            kept (a schedule starts again from step 0).

    Example:
        >>> pruned, report = prune_filters(model, 0.5)
        >>> compile_like(pruned, model, learning_rate=1e-4).fit(x, y, epochs=2)
    """
    if not getattr(original, "compiled", False) or getattr(original, "optimizer", None) is None:
        raise ValueError(
            f"compile_like needs a compiled original model; {original.name!r} is not compiled. "
            "Fix: call pruned.compile(optimizer=..., loss=..., metrics=...) yourself."
        )
    if pruned is original:
        raise ValueError("compile_like: pruned and original are the same model. Fix: pass the pruned copy.")
    config = original.get_compile_config()
    if config is None:
        raise ValueError(f"{original.name!r} has no serializable compile settings. Fix: compile the pruned model yourself.")
    optimizer_config = original.optimizer.get_config()
    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        optimizer_config["learning_rate"] = learning_rate
    elif learning_rate is not None:
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or learning_rate <= 0:
            raise ValueError(
                f"learning_rate must be a number > 0 or a LearningRateSchedule, received {learning_rate!r}."
            )
        optimizer_config["learning_rate"] = float(learning_rate)
    optimizer = original.optimizer.__class__.from_config(optimizer_config)
    compile_args = keras.saving.deserialize_keras_object(config)
    compile_args["optimizer"] = optimizer
    pruned.compile(**compile_args)
    return pruned
