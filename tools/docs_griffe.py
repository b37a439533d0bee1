"""A griffe extension for the API reference: `Example:` sections are read as examples.

tfprune's docstrings head their doctest lines with `Example:` (singular); the Google-style parser
knows only `Examples:` as a section and would render the `>>>` lines as a block quote.
Configured in mkdocs.yml (mkdocstrings' python handler, `extensions`).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_HEADING = re.compile(r"(?m)^([ \t]*)Example:[ \t]*$")


class ExampleSections(griffe.Extension):
    """Renames each docstring's `Example:` heading to `Examples:` before the docstring is parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE_HEADING.sub(r"\1Examples:", obj.docstring.value)
