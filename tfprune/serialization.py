"""Importing this module registers every Keras-serializable class of tfprune (pruning wrapper,
schedules, pruned normalization layers), so saved models load with `keras.saving.load_model`.

`import tfprune` does the same; this module is for code inside tfprune that loads models.

Example:
    >>> import tfprune.serialization  # noqa: F401
    >>> model = keras.saving.load_model("pruned.keras")
"""

from tfprune import functional, hparams, layers, quantization, schedules, wrapper

REGISTERING_MODULES = (functional, hparams, layers, quantization, schedules, wrapper)
