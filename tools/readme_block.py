"""Write benchmark tables atomically and into marked blocks of a markdown file (docs/benchmarks.md).

A benchmark owns the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->`; `replace_block`
swaps it for a freshly generated table, so the page shows what the tool printed. The tables live in
docs/benchmarks.md (the README keeps only headline figures); `--readme` takes any markdown path.

    python tools/bench_x.py --markdown results.md --readme docs/benchmarks.md
"""

from __future__ import annotations

import json
import os
import tempfile


def write_atomic(path: str, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same directory, then rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def replace_block(readme: str, name: str, text: str) -> None:
    """Replace the text between the `name` markers in the markdown file `readme`; raises if they are missing."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    with open(readme) as handle:
        content = handle.read()
    if content.count(begin) != 1 or content.count(end) != 1 or content.index(begin) > content.index(end):
        raise SystemExit(f"{readme}: expected one '{begin}' ... '{end}' block. Fix: add the two marker lines.")
    head, rest = content.split(begin)
    _, tail = rest.split(end)
    write_atomic(readme, f"{head}{begin}\n{text.rstrip()}\n{end}{tail}")


def publish(text: str, result: dict, markdown: str | None, readme: str | None, block: str) -> dict:
    """Print a benchmark's markdown `text` and its `result` as one JSON line; write the text to `markdown`
    and into the `block` of `readme` when given. Returns `result`."""
    print(text)
    print(json.dumps(result))
    if markdown:
        write_atomic(markdown, text)
    if readme:
        replace_block(readme, block, text)
    return result
