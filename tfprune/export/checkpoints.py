"""Checkpoint discovery and loading.

A checkpoint directory may hold:
- `.keras` files, as written by `keras.callbacks.ModelCheckpoint(filepath=dir + "/ckpt-{epoch:02d}.keras")`;
- TensorFlow checkpoints (a `checkpoint` index file plus `ckpt-N.index` / `ckpt-N.data-*`) with the model
  architecture saved beside them as `model.json`, as written by `TFCheckpointWriter`;
- tfmot-pruned tf_keras `.h5` files (legacy; loaded in a subprocess with tf_keras, see `legacy.py`).

The newest candidate by modification time wins; ties are broken by name (the larger name wins, so
`ckpt-10.keras` beats `ckpt-09.keras`). Files that a writer killed mid-save can leave behind are never
picked: hidden and temporary names (`.name`, `*.tmp`, `*.temp`, `*.part`, `*.partial`, `*~`) are
skipped, and so are `.keras` archives without a complete zip directory or `config.json`, and `.h5`
files that HDF5 cannot open; the choice's `reason` names what was skipped.

Example:
    >>> choice = find_latest_checkpoint("ckpts")
    >>> print(choice.reason)
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from typing import Any

from tfprune.export.errors import ExportFailure, ExportUsageError, first_line

ARCHITECTURE_FILE = "model.json"
_TEMP_SUFFIXES = (".tmp", ".temp", ".part", ".partial", "~")


def is_temporary_name(name: str) -> bool:
    """Whether a file name looks like a writer's temporary or hidden file, never a finished checkpoint.

    Example:
        >>> is_temporary_name(".tfprune-tmp-x.keras"), is_temporary_name("ckpt-03.keras")
        (True, False)
    """
    lower = name.lower()
    return lower.startswith(".") or lower.endswith(_TEMP_SUFFIXES)


def is_complete_checkpoint_file(path: str, kind: str) -> bool:
    """Whether a `.keras` (zip with `config.json`) or `.h5` file (opens with HDF5) was written to the end.

    A save interrupted by a crash leaves a `.keras` file without the zip's closing directory, or an
    HDF5 file whose superblock points past its end; both are rejected.

    Example:
        >>> is_complete_checkpoint_file("ckpts/ckpt-03.keras", "keras")
        True
    """
    try:
        if kind == "keras":
            with zipfile.ZipFile(path) as archive:
                return "config.json" in archive.namelist()
        if kind == "h5":
            import h5py

            with h5py.File(path, "r"):
                return True
    except Exception:  # noqa: BLE001 - any reading error means incomplete
        return False
    return True


@dataclasses.dataclass
class CheckpointChoice:
    """The checkpoint picked in a directory: `path` (file, or TF checkpoint prefix), `kind`
    ('keras', 'tf_checkpoint' or 'h5'), `files` (every file that makes it up), `reason` and
    `candidates` (how many checkpoints were found)."""

    path: str
    kind: str
    files: list[str]
    reason: str
    candidates: int

    @property
    def bytes(self) -> int:
        return sum(os.path.getsize(f) for f in self.files if os.path.exists(f))


def _tf_checkpoint_candidates(directory: str) -> list[tuple[float, str, str, list[str]]]:
    # TensorFlow returns the index's relative paths joined to the directory as given: absolute avoids joining twice
    directory = os.path.abspath(directory)
    if not os.path.isfile(os.path.join(directory, "checkpoint")):
        return []
    import tensorflow as tf

    try:
        state = tf.train.get_checkpoint_state(directory)
    except Exception as err:  # noqa: BLE001
        raise ExportFailure(
            f"the TensorFlow checkpoint index {os.path.join(directory, 'checkpoint')!r} is unreadable "
            f"({first_line(err)}). Fix: delete it or restore it from a backup."
        ) from None
    if state is None:
        return []
    prefixes = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
    found = []
    for prefix in prefixes:
        if not os.path.isabs(prefix):
            prefix = os.path.join(directory, prefix)
        index = prefix + ".index"
        if not os.path.isfile(index):
            continue
        folder = os.path.dirname(prefix)
        base = os.path.basename(prefix)
        files = [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if n.startswith(base + ".")]
        arch = os.path.join(directory, ARCHITECTURE_FILE)
        if os.path.isfile(arch):
            files.append(arch)
        mtime = max(os.path.getmtime(f) for f in files)
        found.append((mtime, os.path.basename(prefix), prefix, files))
    return found


def find_latest_checkpoint(directory: str) -> CheckpointChoice:
    """Picks the newest checkpoint in `directory` (see the module docstring)."""
    if not directory:
        raise ExportUsageError("no checkpoint directory given. Fix: pass --checkpoint_dir path/to/checkpoints.")
    if not os.path.exists(directory):
        raise ExportUsageError(
            f"checkpoint directory {directory!r} does not exist. Fix: pass the directory your training wrote "
            "checkpoints to."
        )
    if not os.path.isdir(directory):
        raise ExportUsageError(
            f"{directory!r} is a file, not a directory. Fix: pass the directory that contains it as --checkpoint_dir."
        )
    names = sorted(os.listdir(directory))
    if not names:
        raise ExportUsageError(
            f"checkpoint directory {directory!r} is empty. Fix: train with keras.callbacks.ModelCheckpoint "
            "(filepath=dir/'ckpt-{epoch:02d}.keras') or tfprune.export.TFCheckpointWriter(dir) first."
        )
    candidates: list[tuple[float, str, str, str, list[str]]] = []
    skipped: list[str] = []
    for name in names:
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        lower = name.lower()
        kind = "keras" if lower.endswith(".keras") else "h5" if lower.endswith((".h5", ".hdf5")) else None
        if kind is None:
            continue
        if is_temporary_name(name) or not is_complete_checkpoint_file(path, kind):
            skipped.append(name)
            continue
        candidates.append((os.path.getmtime(path), name, kind, path, [path]))
    tf_found = _tf_checkpoint_candidates(directory)
    if tf_found and not os.path.isfile(os.path.join(directory, ARCHITECTURE_FILE)):
        if not candidates:
            raise ExportUsageError(
                f"{directory!r} holds TensorFlow checkpoints but no {ARCHITECTURE_FILE} architecture file. "
                "Fix: save it with open(dir/'model.json','w').write(model.to_json()), or write checkpoints "
                "with tfprune.export.TFCheckpointWriter(dir)."
            )
        tf_found = []
    for mtime, name, prefix, files in tf_found:
        candidates.append((mtime, name, "tf_checkpoint", prefix, files))
    if not candidates and skipped:
        raise ExportUsageError(
            f"no complete checkpoint in {directory!r}: {', '.join(skipped[:5])} "
            f"{'is' if len(skipped) == 1 else 'are'} temporary or incomplete (a save interrupted by a crash). "
            "Fix: re-run training so a checkpoint is written to the end, or point --checkpoint_dir elsewhere."
        )
    if not candidates:
        raise ExportUsageError(
            f"no checkpoint in {directory!r} (looked for *.keras, *.h5 and a TensorFlow 'checkpoint' index with "
            f"{ARCHITECTURE_FILE}). Fix: point --checkpoint_dir at the directory your ModelCheckpoint wrote to."
        )
    candidates.sort(key=lambda c: (c[0], c[1]))
    mtime, name, kind, path, files = candidates[-1]
    tie = [c for c in candidates if c[0] == mtime]
    if len(candidates) == 1:
        reason = f"the only checkpoint in {directory}"
    elif len(tie) > 1:
        reason = f"newest of {len(candidates)} checkpoints (same modification time as {len(tie) - 1} other(s); " \
                 "largest name wins)"
    else:
        reason = f"newest by modification time of {len(candidates)} checkpoints"
    if skipped:
        shown = ", ".join(skipped[:3]) + (" ..." if len(skipped) > 3 else "")
        reason += f"; skipped {len(skipped)} temporary or incomplete file(s): {shown}"
    return CheckpointChoice(path=path, kind=kind, files=files, reason=reason, candidates=len(candidates))


def load_checkpoint(choice: CheckpointChoice) -> Any:
    """Loads a Keras 3 model from a `.keras` file or a TF checkpoint + `model.json` (tfprune layers included)."""
    import keras
    import tensorflow as tf

    import tfprune.serialization  # noqa: F401 - registers PruneLowMagnitude for deserialization

    if choice.kind == "keras":
        try:
            return keras.saving.load_model(choice.path, compile=False)
        except Exception as err:  # noqa: BLE001 - any load error is reported in one line
            raise ExportFailure(
                f"could not load {choice.path!r}, it may be truncated or corrupt ({first_line(err)}). "
                "Fix: delete it so the previous checkpoint is used, or re-run training."
            ) from None
    if choice.kind == "tf_checkpoint":
        arch = os.path.join(os.path.dirname(choice.path), ARCHITECTURE_FILE)
        try:
            with open(arch, encoding="utf-8") as handle:
                model = keras.models.model_from_json(handle.read())
        except Exception as err:  # noqa: BLE001
            raise ExportFailure(
                f"could not rebuild the model from {arch!r} ({first_line(err)}). Fix: rewrite it with model.to_json()."
            ) from None
        try:
            status = tf.train.Checkpoint(model=model).restore(choice.path)
            status.assert_existing_objects_matched()
        except Exception as err:  # noqa: BLE001
            raise ExportFailure(
                f"could not restore {choice.path!r}, it may be truncated or corrupt or not match {ARCHITECTURE_FILE} "
                f"({first_line(err)}). Fix: delete it so the previous checkpoint is used, or re-run training."
            ) from None
        return model
    raise ExportFailure(f"cannot load a {choice.kind!r} checkpoint in-process. Fix: use strip_checkpoint().")


def _callback_base() -> type:
    import keras

    return keras.callbacks.Callback


class TFCheckpointWriter(_callback_base()):
    """Keras callback writing TensorFlow checkpoints plus the architecture (`model.json`) at each epoch end,
    so that `tfprune-strip --checkpoint_dir` can rebuild the model.

    Args:
        directory: where to write `model.json`, `checkpoint` and `ckpt-N.*`.
        max_to_keep: how many checkpoints `tf.train.CheckpointManager` keeps.

    Example:
        >>> model.fit(x, y, callbacks=[tfprune.UpdatePruningStep(), TFCheckpointWriter("ckpts")])
    """

    def __init__(self, directory: str, max_to_keep: int = 3) -> None:
        super().__init__()
        self.directory = directory
        self.max_to_keep = max_to_keep
        self._manager = None

    def _ensure_manager(self) -> Any:
        import tensorflow as tf

        if self._manager is None:
            os.makedirs(self.directory, exist_ok=True)
            # Atomic: a crash while writing never leaves a truncated model.json next to the checkpoints.
            target = os.path.join(self.directory, ARCHITECTURE_FILE)
            partial = os.path.join(self.directory, f".{ARCHITECTURE_FILE}.{os.getpid()}.tmp")
            with open(partial, "w", encoding="utf-8") as handle:
                handle.write(self.model.to_json())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, target)
            checkpoint = tf.train.Checkpoint(model=self.model)
            self._manager = tf.train.CheckpointManager(checkpoint, self.directory, max_to_keep=self.max_to_keep)
        return self._manager

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._ensure_manager()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        from tfprune.prune import collect_wrappers

        for wrapper in collect_wrappers(self.model):
            if wrapper.built:
                wrapper.apply_masks()  # checkpoints hold exact zeros at pruned positions
        self._ensure_manager().save(checkpoint_number=epoch + 1)
