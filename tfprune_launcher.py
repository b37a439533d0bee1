"""Console-script entry points of tfprune that quiet TensorFlow before it is imported.

Importing `tfprune` imports TensorFlow, whose C++ runtime prints start-up lines (oneDNN,
cuInit, cpu_feature_guard) as it loads. The console scripts (`tfprune-strip`, ...) therefore
start here, in a module outside the `tfprune` package: the log level is set first, then the
command is imported and run. A `TF_CPP_MIN_LOG_LEVEL` the user set is kept, so
`TF_CPP_MIN_LOG_LEVEL=0 tfprune-strip ...` shows everything. Library users who `import tfprune`
are not affected: nothing here runs for them.

Example:
    $ tfprune-strip --help          # no TensorFlow start-up lines
    >>> import tfprune_launcher; tfprune_launcher.quiet_tensorflow()   # in your own script
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator

__all__ = ["quiet_tensorflow", "import_tensorflow_quietly", "filtered_stderr", "is_startup_log_line", "launched_as_command",
           "quiet_if_launched_as_command", "strip", "prune_filters", "summary", "check_m_by_n", "demo"]

# Modules whose deprecation notices are about TensorFlow's internals, not the user's command.
_NOISY_MODULES = r"(tensorflow|tf_keras|keras|absl|google\.protobuf|ai_edge_litert|flatbuffers|h5py|numpy)(\.|$)"
_QUIET_LEVEL = "3"
_USER_LEVEL = False  # the user set TF_CPP_MIN_LOG_LEVEL before quiet_tensorflow ran
_COMMAND_MODULES = ("tfprune.demo", "tfprune.cli.")
# C++ INFO/WARNING lines printed while TensorFlow loads (absl/glog format), and their companions.
_STARTUP_LINE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:. ]+\s+\d+ [\w.]+\.cc:\d+\] .*"
    r"|To enable the following instructions: .*in other operations, rebuild TensorFlow.*"
    r"|.*oneDNN custom operations are on.*"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.)$"
)


def is_startup_log_line(line: str) -> bool:
    """Whether `line` is one of TensorFlow's C++ start-up INFO/WARNING lines (never an error line).

    Example:
        >>> is_startup_log_line("I0000 00:00:1.2   7 cudart_stub.cc:31] Could not find cuda drivers")
        True
    """
    return bool(_STARTUP_LINE.match(line.rstrip("\n")))


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow with its C++ start-up lines hidden; other stderr output is passed on.

    TensorFlow's bundled absl logging writes some start-up lines (e.g. `cudart_stub.cc`)
    before `TF_CPP_MIN_LOG_LEVEL` applies, so the process's stderr is captured while TensorFlow
    loads and replayed without those lines. Does nothing special when the user set
    `TF_CPP_MIN_LOG_LEVEL` themselves, or when TensorFlow is already imported.

    Example:
        >>> import_tensorflow_quietly(); import tensorflow as tf
    """
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") != _QUIET_LEVEL or _USER_LEVEL:
        import tensorflow  # noqa: F401
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr file descriptor (embedded interpreters)
        import tensorflow  # noqa: F401
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines(keepends=True) if not is_startup_log_line(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def quiet_tensorflow() -> None:
    """Hides TensorFlow's C++ start-up logs and its Python deprecation notices, unless the user chose.

    Sets `TF_CPP_MIN_LOG_LEVEL=3` only when it is not set already, and ignores
    DeprecationWarning / PendingDeprecationWarning / FutureWarning raised from TensorFlow, Keras,
    absl, protobuf and LiteRT modules. Must run before TensorFlow is imported to hide the C++ lines.

    Example:
        >>> quiet_tensorflow(); import tensorflow as tf   # no oneDNN / cpu_feature_guard lines
    """
    global _USER_LEVEL
    _USER_LEVEL = _USER_LEVEL or "TF_CPP_MIN_LOG_LEVEL" in os.environ
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", _QUIET_LEVEL)
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=_NOISY_MODULES)


def launched_as_command(argv: list[str] | None = None) -> bool:
    """Whether this process runs a tfprune command (`python -m tfprune.demo`, `-m tfprune.cli.*`).

    Reads `sys.orig_argv` (the interpreter's own command line), so it answers correctly while
    the `tfprune` package is still being imported.

    Example:
        >>> launched_as_command(["python", "-m", "tfprune.demo"])
        True
    """
    argv = list(getattr(sys, "orig_argv", []) if argv is None else argv)
    for i, arg in enumerate(argv[:-1]):
        if arg == "-m":
            module = argv[i + 1]
            return module == "tfprune.demo" or module.startswith(_COMMAND_MODULES[1])
    return False


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Passes the process's stderr (file descriptor 2) through a filter that drops start-up log lines.

    TensorFlow and LiteRT print some INFO lines from C++ (`cudart_stub.cc`, "Created TensorFlow
    Lite XNNPACK delegate") whatever `TF_CPP_MIN_LOG_LEVEL` says; every other line, errors
    included, is forwarded as it is written. Does nothing when the user set
    `TF_CPP_MIN_LOG_LEVEL` themselves.

    Example:
        >>> with filtered_stderr():
        ...     import tensorflow as tf
    """
    if _USER_LEVEL or os.environ.get("TF_CPP_MIN_LOG_LEVEL") != _QUIET_LEVEL:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr file descriptor (embedded interpreters)
        yield
        return
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def forward() -> None:
        with os.fdopen(read_fd, "rb") as source:
            for raw in source:
                if not is_startup_log_line(raw.decode("utf-8", "replace")):
                    os.write(saved, raw)

    pump = threading.Thread(target=forward, name="tfprune-stderr-filter", daemon=True)
    pump.start()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)  # drops the pipe's last write end: the pump sees end of file
        pump.join(timeout=10)
        if not pump.is_alive():
            os.close(saved)


def quiet_if_launched_as_command() -> None:
    """`quiet_tensorflow()` and a quiet TensorFlow import, only for `python -m tfprune.demo` / `-m tfprune.cli.*`.

    Meant as the first statement of `tfprune/__init__.py`, so that `python -m` runs are as
    quiet as the console scripts while `import tfprune` in a user's program changes nothing.

    Example:
        >>> quiet_if_launched_as_command()   # no effect in an interactive session
    """
    if launched_as_command():
        quiet_tensorflow()
        import_tensorflow_quietly()


def _run(module: str, function: str = "run") -> None:
    quiet_tensorflow()
    import importlib

    with filtered_stderr():
        getattr(importlib.import_module(module), function)()


def strip() -> None:
    """`tfprune-strip`."""
    _run("tfprune.cli.strip")


def prune_filters() -> None:
    """`tfprune-prune-filters`."""
    _run("tfprune.cli.prune_filters")


def summary() -> None:
    """`tfprune-summary`."""
    _run("tfprune.cli.summary")


def check_m_by_n() -> None:
    """`tfprune-check-m-by-n`."""
    _run("tfprune.cli.check_m_by_n")


def demo() -> None:
    """`tfprune-demo`: the same as `python -m tfprune.demo`."""
    _run("tfprune.demo", "run")
