"""Print the `--help` text of every tfprune console script as one JSON object (used by the docs build).

The scripts are read from setup.cfg (`[options.entry_points] console_scripts`) and run in this one
process with `--help`, as their console-script wrappers would run them, so TensorFlow is imported
once. `--flags MODULE` adds the absl flags that MODULE defines (for absl apps such as the demo,
whose `--help` lists only the main module's flags).

    python tools/docs_cli_help.py > help.json
    python tools/docs_cli_help.py --flags tfprune.demo
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import importlib
import io
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def console_scripts(setup_cfg: str = os.path.join(ROOT, "setup.cfg")) -> dict[str, str]:
    """{script name: "module:function"} from setup.cfg's console_scripts, in file order."""
    parser = configparser.ConfigParser()
    parser.read(setup_cfg)
    lines = parser.get("options.entry_points", "console_scripts", fallback="").strip().splitlines()
    scripts = {}
    for line in lines:
        name, _, target = line.partition("=")
        scripts[name.strip()] = target.strip()
    return scripts


def help_text(name: str, target: str) -> str:
    """What `name --help` prints on stdout (the exit code of `--help` is not checked)."""
    module, _, function = target.partition(":")
    entry = getattr(importlib.import_module(module), function)
    main_module = sys.modules["__main__"]
    saved_argv, saved_doc = sys.argv, main_module.__doc__
    out = io.StringIO()
    # A console-script wrapper has no docstring; absl apps print the main module's docstring.
    sys.argv, main_module.__doc__ = [name, "--help"], None
    try:
        with contextlib.redirect_stdout(out):
            try:
                entry()
            except SystemExit:
                pass
    finally:
        sys.argv, main_module.__doc__ = saved_argv, saved_doc
    return out.getvalue().strip("\n")


def module_flags(module: str) -> str:
    """The absl flags that `module` defines, as absl's help formats them."""
    from absl import flags

    importlib.import_module(module)
    return flags.FLAGS.module_help(module).strip("\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flags", action="append", default=[], metavar="MODULE",
                        help="also report the absl flags MODULE defines (repeatable)")
    args = parser.parse_args(argv)
    result = {"help": {name: help_text(name, target) for name, target in console_scripts().items()},
              "flags": {module: module_flags(module) for module in args.flags}}
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    main()
