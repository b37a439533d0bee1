"""Handlers and layer classes for optional packages, imported only when a model needs them.

A package such as keras_hub is heavy to import and not a dependency of tfprune. Its handlers live
in a tfprune module that imports it; `defer_package` names that module, and the registry imports it
the first time it looks up a layer class defined in the package. `defer_serializable` does the same
for loading: a saved model that contains a tfprune class built on the package (e.g.
`tfprune>PrunedTransformerEncoder`) loads once tfprune is imported, and only then imports the
package.

Example:
    >>> defer_package("keras_hub", "tfprune.layers.keras_hub_handlers")
    >>> defer_serializable("tfprune>PrunedTransformerEncoder", "tfprune.layers.pruned_transformer",
    ...                    "PrunedTransformerEncoder")
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import keras

_PACKAGES: dict[str, str] = {}


def defer_package(package: str, module: str) -> None:
    """The handlers of the layers of top-level `package` are registered by importing `module`."""
    _PACKAGES[package] = module


def load_handlers_for(layer_class: type) -> None:
    """Imports the deferred handler modules of the packages `layer_class` (or a base class) comes from."""
    if not _PACKAGES:
        return
    for cls in layer_class.__mro__:
        package = (getattr(cls, "__module__", None) or "").split(".", 1)[0]
        module = _PACKAGES.pop(package, None)  # once, also when the import fails
        if module is None:
            continue
        try:
            importlib.import_module(module)
        except Exception as err:  # an incompatible version of the package: its layers stay unknown
            warnings.warn(
                f"tfprune could not load its handlers for {package} layers ({type(err).__name__}: {err}); "
                f"layers such as {layer_class.__name__} are not pruned and their channels are kept. Fix: "
                f"install the {package} version listed in tfprune's `test` extra.",
                stacklevel=3,
            )


class DeferredClass:
    """Stands in Keras' serialization registry for a class whose module imports an optional package."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def resolve(self) -> type:
        return getattr(importlib.import_module(self.module), self.name)

    def from_config(self, config: dict) -> Any:
        return self.resolve().from_config(config)


def defer_serializable(registered_name: str, module: str, name: str) -> None:
    """Lets Keras deserialize `registered_name` by importing `module` when it is first needed.

    Importing `module` registers the real class under the same name (it replaces this stand-in).
    """
    keras.saving.get_custom_objects().setdefault(registered_name, DeferredClass(module, name))
