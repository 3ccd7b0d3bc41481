"""Crash-safe, appendable on-disk recording of SGD trajectories, read back lazily.

Layout of a store directory::

    manifest.json            the commit record (format, d, dtype, every, chunk, chunk list)
    steps-000000.npy         (m,) int64 step numbers of chunk 0
    params-000000.npy        (m, d) flattened parameters (ravel_pytree order, dtype kept)
    grads-000000.npy         (m, d) flattened gradients, if recorded
    .lock                    held (flock) by the one live writer

Commit protocol: a full in-memory chunk is written to temporary files, each fsync'ed and
renamed into place with ``os.replace``; the directory is fsync'ed; then a new manifest listing
the chunk is written the same way. The manifest is the only source of truth: chunk files it
does not list (left by a writer killed between the two renames) are ignored by readers and
overwritten on resume. So a killed writer loses at most its unflushed in-memory chunk, and no
snapshot is ever duplicated or torn. Reopening the directory resumes it and reports
:attr:`TrajectoryRecorder.last_step`; the caller restarts its run from there (the last
snapshot is available to restore the parameters).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator

import jax
import numpy as np

_FORMAT = "grd-trajectory"
_VERSION = 1
_MANIFEST = "manifest.json"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: str, write) -> None:
    """Write ``path`` via a temporary file in the same directory: write, fsync, os.replace."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _chunk_name(field: str, index: int) -> str:
    return f"{field}-{index:06d}.npy"


def _read_manifest(directory: str) -> dict | None:
    path = os.path.join(directory, _MANIFEST)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        manifest = json.load(fh)
    if manifest.get("format") != _FORMAT:
        raise ValueError(f"`directory` {directory!r} does not hold a grd trajectory store.")
    if manifest.get("version") != _VERSION:
        raise ValueError(
            f"trajectory store {directory!r} has version {manifest.get('version')}; "
            f"this grd reads version {_VERSION}."
        )
    return manifest


class TrajectoryRecorder:
    """Record flattened parameters (and optionally gradients) every ``every`` steps.

    Usage::

        rec = TrajectoryRecorder("runs/a", every=10, chunk=256)
        start = 0 if rec.last_step is None else rec.last_step + 1
        if rec.last_step is not None:
            params = unravel(load_trajectory("runs/a")[-1])  # restore, then continue
        for step in range(start, total):
            params = sgd_step(params, step)
            rec.record(step, params)           # stored iff step % every == 0
        rec.close()                            # flushes the partial chunk

    It is also a context manager (``with TrajectoryRecorder(...) as rec:``), which flushes
    on exit.

    Args:
      directory: store directory (created if missing). An existing store is resumed; its
        ``every``, ``chunk`` and ``record_grads`` settings must match.
      every: record steps with ``step % every == 0``.
      chunk: snapshots per chunk file (the most a kill can lose).
      record_grads: also store a gradient with each snapshot (``record(..., grads=...)``).
      dtype: storage dtype (default: the dtype of the first snapshot; fixed by the store).

    Attributes:
      last_step: the last step committed to disk (``None`` for an empty store); snapshots
        buffered in memory are not counted until :meth:`flush`.
    """

    def __init__(
        self, directory, *, every: int = 1, chunk: int = 256, record_grads: bool = False, dtype=None
    ):
        if not (isinstance(every, int) and every >= 1):
            raise ValueError(f"`every` must be an int ≥ 1; got {every!r}.")
        if not (isinstance(chunk, int) and chunk >= 1):
            raise ValueError(f"`chunk` must be an int ≥ 1; got {chunk!r}.")
        self.directory = os.fspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self._lock = open(os.path.join(self.directory, ".lock"), "a")  # noqa: SIM115
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RuntimeError(
                f"another TrajectoryRecorder is writing to {self.directory!r}; "
                "one writer per store."
            ) from None
        for name in os.listdir(self.directory):  # debris of a killed writer
            if name.startswith(".") and ".tmp-" in name:
                os.remove(os.path.join(self.directory, name))
        manifest = _read_manifest(self.directory)
        if manifest is None:
            manifest = {
                "format": _FORMAT,
                "version": _VERSION,
                "every": every,
                "chunk": chunk,
                "fields": ["params", "grads"] if record_grads else ["params"],
                "d": None,
                "dtype": None if dtype is None else np.dtype(dtype).str,
                "leaves": None,
                "chunks": [],
            }
        else:
            fields = ["params", "grads"] if record_grads else ["params"]
            for key, value in (("every", every), ("chunk", chunk), ("fields", fields)):
                if manifest[key] != value:
                    self._lock.close()
                    raise ValueError(
                        f"store {self.directory!r} was created with {key}={manifest[key]!r}; "
                        f"got {key}={value!r}. Reopen it with the same settings."
                    )
            if dtype is not None and manifest["dtype"] not in (None, np.dtype(dtype).str):
                self._lock.close()
                raise ValueError(
                    f"store {self.directory!r} has dtype {manifest['dtype']}; got {dtype}."
                )
        self._manifest = manifest
        self._buffer: list[tuple[int, np.ndarray, np.ndarray | None]] = []
        self._closed = False

    # ----------------------------------------------------------------------------- state
    @property
    def every(self) -> int:
        return self._manifest["every"]

    @property
    def last_step(self) -> int | None:
        chunks = self._manifest["chunks"]
        return chunks[-1]["last_step"] if chunks else None

    @property
    def _pending_last(self) -> int | None:
        return self._buffer[-1][0] if self._buffer else self.last_step

    def __len__(self) -> int:
        """Snapshots committed to disk plus those buffered in memory."""
        return sum(c["count"] for c in self._manifest["chunks"]) + len(self._buffer)

    # ------------------------------------------------------------------------- recording
    def _flatten(self, tree, name: str) -> np.ndarray:
        # The order of ravel_pytree (tree_leaves, each raveled), but in numpy: no device
        # round trip and no silent float64 → float32 cast when jax_enable_x64 is off.
        leaves = jax.tree_util.tree_leaves(tree)
        if not leaves:
            raise ValueError(f"`{name}` has no array leaves.")
        flat = np.concatenate([np.ravel(np.asarray(x)) for x in leaves])
        m = self._manifest
        if m["d"] is None:
            m["d"] = int(flat.size)
            if m["dtype"] is None:
                m["dtype"] = flat.dtype.str
            m["leaves"] = [
                {"path": jax.tree_util.keystr(p), "shape": list(np.shape(x))}
                for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
            ]
        if flat.size != m["d"]:
            raise ValueError(f"`{name}` has {flat.size} scalars; this store records d = {m['d']}.")
        return flat.astype(np.dtype(m["dtype"]), copy=True)

    def record(self, step: int, params, grads=None) -> bool:
        """Buffer the snapshot of ``step`` if ``step % every == 0``; flush full chunks.

        Args:
          step: integer training step; recorded steps must strictly increase.
          params: parameter pytree (flattened with ``ravel_pytree``).
          grads: gradient pytree, required iff the store records gradients.

        Returns:
          Whether the snapshot was recorded.
        """
        if self._closed:
            raise RuntimeError("this TrajectoryRecorder is closed.")
        step = int(step)
        if step % self.every != 0:
            return False
        last = self._pending_last
        if last is not None and step <= last:
            raise ValueError(
                f"`step` {step} is not after the last recorded step {last}; resume from "
                f"last_step + 1 (steps must strictly increase, so no snapshot is duplicated)."
            )
        with_grads = "grads" in self._manifest["fields"]
        if with_grads != (grads is not None):
            raise ValueError(
                "`grads` must be given at every step iff the store was opened with "
                f"record_grads=True (it was opened with record_grads={with_grads})."
            )
        p = self._flatten(params, "params")
        g = self._flatten(grads, "grads") if with_grads else None
        self._buffer.append((step, p, g))
        if len(self._buffer) >= self._manifest["chunk"]:
            self.flush()
        return True

    def flush(self) -> None:
        """Commit the buffered snapshots as one chunk (atomic; a no-op if nothing is buffered)."""
        if not self._buffer:
            return
        m = self._manifest
        index = len(m["chunks"])
        steps = np.asarray([s for s, _, _ in self._buffer], np.int64)
        arrays = {"steps": steps, "params": np.stack([p for _, p, _ in self._buffer])}
        if "grads" in m["fields"]:
            arrays["grads"] = np.stack([g for _, _, g in self._buffer])
        for field, arr in arrays.items():
            path = os.path.join(self.directory, _chunk_name(field, index))
            _atomic_write(path, lambda fh, a=arr: np.save(fh, a, allow_pickle=False))
        _fsync_dir(self.directory)
        entry = {
            "index": index,
            "count": int(steps.size),
            "first_step": int(steps[0]),
            "last_step": int(steps[-1]),
        }
        new_manifest = dict(m, chunks=[*m["chunks"], entry])
        payload = json.dumps(new_manifest, indent=1).encode("utf-8")
        _atomic_write(os.path.join(self.directory, _MANIFEST), lambda fh: fh.write(payload))
        _fsync_dir(self.directory)
        self._manifest = new_manifest
        self._buffer = []

    def close(self) -> None:
        """Flush and release the writer lock."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._lock.close()

    def __enter__(self) -> TrajectoryRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Trajectory:
    """Lazy read-only view of a store: ``len``, ``steps``, indexing, ``as_array()``.

    Chunks are memory-mapped (``np.load(mmap_mode="r")``) on first access; only the manifest
    and the small step arrays are read eagerly.
    """

    def __init__(self, directory, field: str = "params"):
        self.directory = os.fspath(directory)
        manifest = _read_manifest(self.directory)
        if manifest is None:
            raise ValueError(f"`directory` {self.directory!r} has no manifest.json.")
        if field not in manifest["fields"]:
            raise ValueError(f"`field` must be one of {manifest['fields']}; got {field!r}.")
        self.field = field
        self.manifest = manifest
        self._chunks = manifest["chunks"]
        counts = np.asarray([c["count"] for c in self._chunks], np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(counts)])
        self._maps: dict[int, np.ndarray] = {}
        steps = [
            np.load(os.path.join(self.directory, _chunk_name("steps", c["index"])))
            for c in self._chunks
        ]
        self.steps = np.concatenate(steps) if steps else np.zeros((0,), np.int64)
        self.steps.setflags(write=False)
        self.d = manifest["d"]
        self.dtype = None if manifest["dtype"] is None else np.dtype(manifest["dtype"])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _chunk(self, i: int) -> np.ndarray:
        if i not in self._maps:
            path = os.path.join(self.directory, _chunk_name(self.field, self._chunks[i]["index"]))
            arr = np.load(path, mmap_mode="r")
            if arr.shape != (self._chunks[i]["count"], self.d):
                raise ValueError(f"chunk {path!r} has shape {arr.shape}; the manifest disagrees.")
            self._maps[i] = arr
        return self._maps[i]

    def __getitem__(self, index):
        """Row ``index`` (a (d,) read-only view), or a (k, d) array for a slice / index array."""
        n = len(self)
        if isinstance(index, int | np.integer):
            i = int(index) + n if index < 0 else int(index)
            if not 0 <= i < n:
                raise IndexError(f"snapshot index {index} out of range for {n} snapshots.")
            c = int(np.searchsorted(self._offsets, i, side="right") - 1)
            return self._chunk(c)[i - self._offsets[c]]
        idx = np.arange(n)[index]
        if idx.size == 0:
            return np.zeros((0, self.d or 0), self.dtype)
        return np.stack([self[int(i)] for i in idx])

    def __iter__(self) -> Iterator[np.ndarray]:
        for c in range(len(self._chunks)):
            yield from self._chunk(c)

    def as_array(self) -> np.ndarray:
        """All snapshots as one (T, d) in-memory array."""
        if not self._chunks:
            return np.zeros((0, self.d or 0), self.dtype)
        return np.concatenate([self._chunk(c) for c in range(len(self._chunks))])


def load_trajectory(directory, field: str = "params") -> Trajectory:
    """Open a :class:`TrajectoryRecorder` store for lazy reading.

    Args:
      directory: the store directory.
      field: ``"params"`` or ``"grads"``.

    Returns:
      A :class:`Trajectory` (len, ``.steps`` (T,), ``[i]`` → (d,), ``as_array()`` → (T, d)).
    """
    return Trajectory(directory, field)
