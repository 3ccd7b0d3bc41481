"""Output directories that never lose the user's files: grd replaces only what it wrote.

Every report directory grd writes holds a marker file, :data:`MARKER` (``.grd-report``), a
JSON record of the grd version, the command, the date and **the list of files grd wrote**.
The marker is the last file written, so its presence also says that the report is complete.
An existing output directory is replaced only if

* it is empty, or
* it holds a marker and nothing else than the files the marker lists (and the directories
  that hold them).

Anything else — a directory without a marker, a report to which the user added a file, a
file, the current directory or one of its parents, the home directory, ``/`` — is refused
with :class:`OutputError` (the CLI turns it into one line and exit code 2), before any
computation. When a report is replaced, the old directory is first renamed aside, the new
one renamed into place, and then only the files listed in the old marker are deleted; the
new directory gets the old one's permission bits (a new directory gets ``0o777 & ~umask``).
"""

from __future__ import annotations

import datetime
import json
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

MARKER = ".grd-report"
_FORMAT = "grd-report"
_VERSION = 1


class OutputError(ValueError):
    """The output path cannot be used (the message is one line and says why)."""


class OutputExistsError(OutputError, FileExistsError):
    """The output directory holds a grd report and replacing it was not allowed."""


@dataclass(frozen=True)
class OutputPlan:
    """What writing to ``out`` would do: ``kind`` is ``"new"``, ``"empty"`` or ``"report"``."""

    out: Path
    real: Path
    kind: str
    files: tuple[str, ...] = ()  # the files an existing report's marker lists
    marker: dict = field(default_factory=dict)

    def describe(self) -> str:
        """One line naming what replacing ``out`` would delete."""
        if self.kind != "report":
            return f"{self.out} is {'empty' if self.kind == 'empty' else 'new'}"
        top = sorted({f.split("/")[0] + ("/" if "/" in f else "") for f in self.files})
        when = self.marker.get("created", "an unknown date")
        cmd = " ".join(self.marker.get("command") or []) or "grd"
        return (
            f"{self.out} holds a grd report written {when} by `{cmd}`: "
            f"{len(self.files)} files ({', '.join(top)})"
        )


def _walk(directory: Path) -> tuple[set[str], set[str]]:
    """Relative paths of the files (and symlinks) and of the directories under ``directory``."""
    files, dirs = set(), set()
    for root, dirnames, filenames in os.walk(directory, followlinks=False):
        rel = Path(root).relative_to(directory)
        for d in list(dirnames):
            p = (rel / d).as_posix()
            if (Path(root) / d).is_symlink():
                files.add(p)  # a symlink is an entry to delete, never to descend into
                dirnames.remove(d)
            else:
                dirs.add(p)
        for f in filenames:
            files.add((rel / f).as_posix())
    return files, dirs


def read_marker(directory) -> dict | None:
    """The marker record of ``directory``, or ``None`` if it has none (or an unreadable one)."""
    path = Path(directory) / MARKER
    if not path.is_file() or path.is_symlink():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != _FORMAT:
        return None
    files = record.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    for f in files:  # relative paths inside the directory only (no "..", no absolute path)
        parts = Path(f).parts
        if not parts or Path(f).is_absolute() or ".." in parts or f != Path(f).as_posix():
            return None
    return record


def write_marker(directory, files, *, command=None, version: str | None = None) -> Path:
    """Write the marker of a finished report into ``directory`` (the last file written)."""
    directory = Path(directory)
    record = {
        "format": _FORMAT,
        "version": _VERSION,
        "grd": version,
        "command": list(command) if command else None,
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "files": sorted(Path(f).as_posix() for f in files),
    }
    path = directory / MARKER
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=1)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    return path


def _foreign(directory: Path, record: dict) -> list[str]:
    """Entries of ``directory`` that its marker does not list (files grd did not write)."""
    listed = set(record["files"]) | {MARKER}
    parents = {p.as_posix() for f in record["files"] for p in Path(f).parents} - {"."}
    files, dirs = _walk(directory)
    return sorted((files - listed) | (dirs - parents))


def _is_within(path: Path, other: Path) -> bool:
    return path == other or other.is_relative_to(path)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output(out, *, overwrite: bool, flag: str = "--out") -> OutputPlan:
    """Check that ``out`` can receive a report; return the plan, or raise :class:`OutputError`.

    Nothing is created or deleted (writability is probed with a temporary directory that is
    removed at once). ``overwrite=False`` refuses an existing report with
    :class:`OutputExistsError` (the CLI then asks on a terminal).
    """
    text = os.fspath(out)
    if not text.strip():
        raise OutputError(f"{flag} is empty; give a directory name, e.g. {flag} grd-report.")
    out = Path(text)
    real = Path(os.path.realpath(os.path.expanduser(text)))
    cwd = Path(os.path.realpath(os.getcwd()))
    home = Path(os.path.realpath(os.path.expanduser("~")))
    if _is_within(real, cwd):
        what = "the current directory" if real == cwd else "a parent of the current directory"
        raise OutputError(
            f"{flag} {out} is {what}; grd writes a new directory and replaces it as a whole: "
            f"give a new name, e.g. {flag} {Path(text) / 'grd-report'}."
        )
    if real == real.parent or _is_within(real, home):
        what = "the root directory" if real == real.parent else "your home directory or a parent"
        raise OutputError(f"{flag} {out} is {what}; give a new directory for the report.")
    if real.exists() or real.is_symlink():
        if not real.is_dir():
            raise OutputError(f"{flag} {out} exists and is not a directory.")
    parent = _nearest_existing(real.parent)
    if not parent.is_dir():
        raise OutputError(f"{flag} {out}: {parent} is not a directory.")
    try:  # the only reliable writability test (root, read-only mounts, /proc, /sys)
        os.rmdir(tempfile.mkdtemp(prefix=f".{real.name}.probe-", dir=parent))
    except OSError as e:
        raise OutputError(
            f"{flag} {out}: cannot create a directory in {parent} ({e.strerror or e})."
        ) from None
    if not real.exists():
        return OutputPlan(out, real, "new")
    try:
        entries = os.listdir(real)
    except OSError as e:
        raise OutputError(f"{flag} {out}: cannot read it ({e.strerror or e}).") from None
    if not entries:
        return OutputPlan(out, real, "empty")
    record = read_marker(real)
    if record is None:
        shown = ", ".join(sorted(entries)[:3]) + (", …" if len(entries) > 3 else "")
        raise OutputError(
            f"{flag} {out} is not empty and was not written by grd (no {MARKER} marker; it "
            f"holds {shown}); grd never replaces such a directory, even with --force: "
            "choose a new directory."
        )
    foreign = _foreign(real, record)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", …" if len(foreign) > 3 else "")
        raise OutputError(
            f"{flag} {out} holds a grd report plus {len(foreign)} entries grd did not write "
            f"({shown}); grd replaces it only without them, even with --force: move them "
            "out or choose a new directory."
        )
    plan = OutputPlan(out, real, "report", tuple(sorted(record["files"])), record)
    if not overwrite:
        raise OutputExistsError(
            f"{flag} {out} holds a grd report ({len(plan.files)} files); pass --force to "
            "replace it."
        )
    return plan


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_listed(directory: Path, files) -> list[str]:
    """Delete the listed files (and the marker), then the directories left empty, bottom-up.

    Only entries found inside ``directory`` (symlinks not followed) are deleted. Returns what
    remains (entries that appeared after the check): those are kept.
    """
    present, _ = _walk(directory)
    for f in sorted(present & {*files, MARKER}):
        (directory / f).unlink()
    _, dirs = _walk(directory)
    for d in sorted(dirs, key=lambda s: s.count("/"), reverse=True):
        try:
            (directory / d).rmdir()
        except OSError:
            pass
    try:
        directory.rmdir()
    except OSError:
        files_left, dirs_left = _walk(directory)
        return sorted(files_left | dirs_left)
    return []


def install(tmp, plan: OutputPlan) -> str | None:
    """Move the finished report ``tmp`` (marker written) to ``plan.out``, keeping permissions.

    The target is checked again first (a file may have been added during the run); on a
    refusal :class:`OutputError` is raised and ``tmp`` is left in place. Returns a warning line
    if the old directory could not be removed completely (entries grd did not write, added
    after the check, are kept in a hidden ``.<name>.old-*`` directory), else ``None``.
    """
    tmp = Path(tmp)
    target = plan.real
    now = check_output(plan.out, overwrite=True) if plan.kind != "new" else None
    if plan.kind == "new" and (target.exists() or target.is_symlink()):
        now = check_output(plan.out, overwrite=True)
    if now is None:
        os.chmod(tmp, 0o777 & ~_umask())
        os.rename(tmp, target)
        return None
    st = os.stat(target)
    os.chmod(tmp, stat.S_IMODE(st.st_mode))
    try:
        os.chown(tmp, -1, st.st_gid)
    except OSError:
        pass  # not a member of the group: the mode is still kept
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rmdir(old)  # a free name beside the target
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    left = _remove_listed(old, now.files)
    if left:
        return (
            f"{old} kept: it holds {len(left)} entries grd did not write ({', '.join(left[:3])})."
        )
    return None
