"""An architecture's identity independent of its channel counts, so that a pruned model and its
original share cached latency measurements and calibration points.

Example:
    >>> structure_key(model) == structure_key(pruned)
    True
"""

from __future__ import annotations

import hashlib
import json

import keras

from tfprune.keras_graph import flatten_model


def structure_key(model: keras.Model) -> str:
    """The model's name and a hash of its layer types and names and its spatial input shapes.

    Example:
        >>> structure_key(model)
        'resnet56:3f2a9c...'
    """
    calls, _, _ = flatten_model(model)
    text = json.dumps([[type(c.layer).__name__, getattr(c.layer, "name", "")] for c in calls]
                      + [list(t.shape[1:-1]) for t in model.inputs])
    return f"{model.name}:{hashlib.sha1(text.encode()).hexdigest()[:16]}"
