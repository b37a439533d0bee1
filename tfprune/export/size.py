"""Size measurement of files and directories: raw bytes, zip (DEFLATED) bytes, gzip bytes.

Example:
    >>> sizes = measure("model.tflite")   # {'raw_bytes': ..., 'zip_bytes': ..., 'gzip_bytes': ...}
"""

from __future__ import annotations

import gzip
import io
import os
import zipfile


def _files(path: str) -> list[str]:
    if os.path.isdir(path):
        found = []
        for root, _, names in os.walk(path):
            found.extend(os.path.join(root, name) for name in sorted(names))
        return sorted(found)
    return [path]


def raw_bytes(path: str) -> int:
    """Size of a file, or total size of the files under a directory."""
    return sum(os.path.getsize(f) for f in _files(path))


def zip_bytes(path: str) -> int:
    """Size of a zip archive (ZIP_DEFLATED, level 9) of the file or directory."""
    buffer = io.BytesIO()
    base = os.path.dirname(os.path.abspath(path))
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name in _files(path):
            archive.write(name, arcname=os.path.relpath(name, base))
    return len(buffer.getvalue())


def gzip_bytes(path: str) -> int:
    """Size of the gzip (level 9) of the file, or of the concatenated files of a directory."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9, mtime=0) as handle:
        for name in _files(path):
            with open(name, "rb") as source:
                handle.write(source.read())
    return len(buffer.getvalue())


def measure(path: str) -> dict:
    """`{'raw_bytes', 'zip_bytes', 'gzip_bytes'}` of a file or directory."""
    return {"raw_bytes": raw_bytes(path), "zip_bytes": zip_bytes(path), "gzip_bytes": gzip_bytes(path)}
