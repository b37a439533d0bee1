"""MkDocs hooks of the tfprune site (configured in mkdocs.yml): pages that cannot go stale.

Two placeholders are filled while the site is built:

- `<!-- cli-help: NAME -->` becomes the `--help` text of console script NAME, and
  `<!-- cli-flags: MODULE -->` the absl flags MODULE defines, both produced by running
  tools/docs_cli_help.py (one process, TensorFlow imported once, started before the pages are
  rendered so that it runs alongside). A page that documents console
  scripts must document every script of setup.cfg: a missing or unknown one fails the build.
- `<!-- api-submodules -->` becomes the reference of tfprune's submodules (those in
  `tfprune.__all__`): a link for each that has its own page under docs/reference/, and for the
  others a mkdocstrings directive listing their public names, less those already documented at
  the top level (so every public name is documented once).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import griffe
from mkdocs.exceptions import PluginError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CLI_HELP = re.compile(r"^<!-- cli-help: (\S+) -->$", re.MULTILINE)
_CLI_FLAGS = re.compile(r"^<!-- cli-flags: (\S+) -->$", re.MULTILINE)
_SUBMODULES = "<!-- api-submodules -->"
_running: dict[str, Any] = {}


def _start_cli_help(flag_modules: tuple[str, ...]) -> subprocess.Popen:
    command = [sys.executable, os.path.join(ROOT, "tools", "docs_cli_help.py")]
    for module in flag_modules:
        command += ["--flags", module]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cli_texts(flag_modules: tuple[str, ...]) -> dict[str, Any]:
    started = _running.get("modules") == flag_modules and "process" in _running
    process = _running.pop("process") if started else _start_cli_help(flag_modules)
    out, err = process.communicate(timeout=600)
    if process.returncode != 0:
        raise PluginError(f"tools/docs_cli_help.py failed (exit {process.returncode}):\n{err[-3000:]}")
    return json.loads(out)


def on_pre_build(config: Any) -> None:
    """Starts tools/docs_cli_help.py (it imports TensorFlow) while the rest of the site builds."""
    modules = set()
    for directory, _, names in os.walk(config["docs_dir"]):
        for name in names:
            if name.endswith(".md"):
                with open(os.path.join(directory, name), encoding="utf-8") as handle:
                    modules.update(_CLI_FLAGS.findall(handle.read()))
    _running.clear()
    _running["modules"] = tuple(sorted(modules))
    _running["process"] = _start_cli_help(_running["modules"])


def _text_block(text: str) -> str:
    return f"```text\n{text.rstrip()}\n```"


def _fill_cli(markdown: str, page_path: str) -> str:
    names = _CLI_HELP.findall(markdown)
    modules = tuple(sorted(set(_CLI_FLAGS.findall(markdown))))
    if not names and not modules:
        return markdown
    texts = _cli_texts(modules)
    scripts = list(texts["help"])
    unknown = [n for n in names if n not in texts["help"]]
    missing = [n for n in scripts if n not in names] if names else []
    if unknown or missing:
        raise PluginError(f"{page_path}: cli-help placeholders must name each console script of setup.cfg once; "
                          f"unknown: {unknown}, missing: {missing}. Fix: add or remove `<!-- cli-help: NAME -->` lines.")
    markdown = _CLI_HELP.sub(lambda m: _text_block(texts["help"][m.group(1)]), markdown)
    return _CLI_FLAGS.sub(lambda m: _text_block(texts["flags"][m.group(1)]), markdown)


def _public_names(module: griffe.Module) -> list[str]:
    if module.exports is not None:
        return [str(name) for name in module.exports]
    return [name for name, member in module.members.items() if not name.startswith("_") and not member.is_alias]


def submodule_reference(reference_dir: str) -> str:
    """Markdown for the submodules listed in `tfprune.__all__` (see the module docstring)."""
    package = griffe.load("tfprune", search_paths=[ROOT], resolve_aliases=False)
    top_level = set(_public_names(package))
    links, directives = [], []
    for name in sorted(top_level):
        target = package.members.get(name)
        if target is None or target.is_alias or not target.is_module:
            continue
        if os.path.isfile(os.path.join(reference_dir, f"{name}.md")):
            summary = target.docstring.value.strip().splitlines()[0] if target.docstring else ""
            links.append(f"- [`tfprune.{name}`]({name}.md): {summary}")
            continue
        members = [m for m in _public_names(target) if m not in top_level]
        option = "[" + ", ".join(members) + "]" if members else "false"
        directives.append(f"::: tfprune.{name}\n    options:\n      members: {option}\n")
    return "\n".join(["Subpackages with a page of their own:", "", *links, "", *directives])


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Fills the placeholders of one page (MkDocs calls this for every page)."""
    path = page.file.src_uri
    markdown = _fill_cli(markdown, path)
    if _SUBMODULES in markdown:
        reference_dir = os.path.join(config["docs_dir"], os.path.dirname(path))
        markdown = markdown.replace(_SUBMODULES, submodule_reference(reference_dir))
    return markdown
