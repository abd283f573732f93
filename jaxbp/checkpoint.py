"""Checkpoints of any pytree: atomic on disk, verified on load.

A checkpoint is one `.npz` file per saved step, `ckpt-000001200.npz`, holding every leaf of the
pytree as an array plus a JSON description: each leaf's path, shape, dtype and CRC-32, and any
metadata you pass (the step, the metrics history, ...). JAX PRNG keys are stored as their raw
`key_data` and rebuilt with their implementation on load.

Atomic: the file is written under a temporary name in the same folder, flushed, fsync'ed, and
only then renamed onto its final name (`os.replace`, atomic on POSIX). A process killed at any
moment leaves either the previous checkpoints untouched or the new one complete, never half a
file; stray temporary files are ignored and cleaned up by the next save.

Verified: `load(path, like)` rebuilds the tree with the structure of `like` (for instance a
freshly initialised training state) and raises `CheckpointError` naming the first leaf whose
path, shape or dtype differs, or whose bytes no longer match their checksum.

Example:
    >>> import tempfile, jax.numpy as jnp
    >>> from jaxbp import checkpoint
    >>> tree = {"W": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    >>> folder = tempfile.mkdtemp()
    >>> path = checkpoint.save(folder, 10, tree, metadata={"note": "hi"})
    >>> restored, meta = checkpoint.load(checkpoint.latest(folder), like=tree)
    >>> meta["step"], meta["note"], restored["W"].shape
    (10, 'hi', (2, 3))
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = "jaxbp-checkpoint-1"
_NAME = re.compile(r"^ckpt-(\d{9})\.npz$")
_META = "__meta__"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, corrupted, or not matching the model."""


def path_for(directory, step: int) -> Path:
    return Path(directory) / f"ckpt-{int(step):09d}.npz"


def _is_key(leaf) -> bool:
    return isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _describe(path, leaf) -> dict:
    """Path, kind (array or PRNG key), shape and stored dtype of a leaf, without copying it."""
    if _is_key(leaf):
        kind, dtype = "key:" + str(jax.random.key_impl(leaf)), jax.random.key_data(leaf).dtype
    else:
        kind, dtype = "array", leaf.dtype if hasattr(leaf, "dtype") else jnp.result_type(leaf)
    return {
        "path": jax.tree_util.keystr(path),
        "kind": kind,
        "shape": list(np.shape(leaf)),
        "dtype": str(np.dtype(dtype)),
    }


def _leaf_record(path, leaf):
    """(array to store, its description with checksum) for one leaf."""
    array = np.asarray(jax.random.key_data(leaf) if _is_key(leaf) else leaf)
    record = _describe(path, leaf)
    record["crc32"] = zlib.crc32(np.ascontiguousarray(array).tobytes())
    return array, record


def save(directory, step: int, tree, *, metadata: dict | None = None, keep: int | None = 3) -> Path:
    """Write `tree` (any pytree of arrays and PRNG keys) as the checkpoint of `step`, atomically.

    `metadata` must be JSON-serialisable; it comes back from `load` together with `step`.
    Keeps only the newest `keep` checkpoints in `directory` (None keeps all).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    arrays, records = {}, []
    for i, (path, leaf) in enumerate(leaves):
        array, record = _leaf_record(path, leaf)
        arrays[f"leaf_{i:05d}"] = array
        records.append(record)
    meta = {
        "format": FORMAT,
        "step": int(step),
        "treedef": str(treedef),
        "leaves": records,
        **(metadata or {}),
    }
    arrays[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)

    final = path_for(directory, step)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, final)  # atomic: readers see the old state or the whole new file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(directory)
    _cleanup(directory, keep)
    return final


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible on every platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _cleanup(directory: Path, keep: int | None) -> None:
    for stray in directory.glob(".tmp-*.npz"):  # left by a process killed mid-write
        stray.unlink(missing_ok=True)
    if keep is not None:
        for old in all_checkpoints(directory)[:-keep]:
            old.unlink(missing_ok=True)


def all_checkpoints(directory) -> list[Path]:
    """Complete checkpoints in `directory`, oldest first (temporary files are not listed)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest(directory) -> Path | None:
    """The newest complete checkpoint in `directory`, or None."""
    found = all_checkpoints(directory)
    return found[-1] if found else None


def read_metadata(path) -> dict:
    """The JSON description stored in a checkpoint (step, leaves, user metadata)."""
    with _open(path) as z:
        return _meta(path, z)


def _reason(e: Exception) -> str:
    """NumPy's reason, except its advice to unpickle: a jaxbp checkpoint never holds pickles."""
    text = str(e)
    if "pickle" in text.lower():
        return "it holds pickled (object) data, which a jaxbp checkpoint never does"
    return text


def _open(path):
    """Open `path` as an npz archive, refusing anything else as not a jaxbp checkpoint."""
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as e:
        raise CheckpointError(f"checkpoint {path}: cannot be read ({e})") from e
    if not is_zip:
        raise CheckpointError(
            f"checkpoint {path}: cannot be read: not an .npz (zip) archive, so not a jaxbp "
            "checkpoint (a truncated file, or another kind of file)"
        )
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(f"checkpoint {path}: cannot be read ({_reason(e)})") from e


def _meta(path, z) -> dict:
    if _META not in z.files:
        raise CheckpointError(
            f"{path} is not a jaxbp checkpoint: an npz archive without the {_META} entry"
        )
    try:
        meta = json.loads(z[_META].tobytes().decode())
    except (ValueError, UnicodeDecodeError, OSError, zipfile.BadZipFile) as e:
        raise CheckpointError(
            f"{path} is not a jaxbp checkpoint: its {_META} entry is unreadable ({_reason(e)})"
        ) from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is not a jaxbp checkpoint: its {_META} is not a JSON object")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: unknown format {meta.get('format')!r}")
    return meta


def load(path, like):
    """Read the checkpoint at `path` into the structure of `like`; returns (tree, metadata).

    `like` is a pytree with the expected structure, shapes and dtypes (its values are not
    used; `jax.eval_shape` output works). Raises `CheckpointError` naming the first leaf that
    differs in path, shape, dtype or kind (array vs PRNG key), or whose checksum fails.
    """
    expected, treedef = jax.tree_util.tree_flatten_with_path(like)
    with _open(path) as z:
        meta = _meta(path, z)
        records = meta["leaves"]
        if len(records) != len(expected):
            have = {r["path"] for r in records}
            want = {jax.tree_util.keystr(p) for p, _ in expected}
            missing, extra = sorted(want - have), sorted(have - want)
            raise CheckpointError(
                f"checkpoint {path}: holds {len(records)} leaves, the model expects "
                f"{len(expected)}; missing from the checkpoint: {missing[:5]}, "
                f"not in the model: {extra[:5]}"
            )
        leaves = []
        for i, ((p, want), record) in enumerate(zip(expected, records, strict=True)):
            name = jax.tree_util.keystr(p)
            want_record = _describe(p, want)
            for field in ("path", "kind", "shape", "dtype"):
                if record[field] != want_record[field]:
                    raise CheckpointError(
                        f"checkpoint {path}: leaf {name} (#{i}) has {field} {record[field]!r} "
                        f"in the checkpoint but {want_record[field]!r} in the model "
                        "(was it saved from another model, optimizer, or dtype setting?)"
                    )
            try:
                array = z[f"leaf_{i:05d}"]
            except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
                raise CheckpointError(
                    f"checkpoint {path}: leaf {name} (#{i}) is corrupted or missing ({_reason(e)})"
                ) from e
            if zlib.crc32(np.ascontiguousarray(array).tobytes()) != record["crc32"]:
                raise CheckpointError(
                    f"checkpoint {path}: leaf {name} (#{i}) is corrupted (checksum mismatch)"
                )
            if record["kind"].startswith("key:"):
                leaves.append(jax.random.wrap_key_data(array, impl=record["kind"][4:]))
            else:
                leaves.append(jnp.asarray(array))
    return jax.tree_util.tree_unflatten(treedef, leaves), meta
