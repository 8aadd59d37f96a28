"""Holding a work directory for one command: writable, exclusively locked, without stale temporaries."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Iterator

from . import artifacts
from .errors import SkEdgeError, UsageError
from .names import _ATOMIC_TEMPORARY, _RENDER_TEMPORARIES


def _check_writable(workdir: Path) -> None:
    """Create ``workdir`` if needed and prove it takes a file, before any heavy work."""
    if workdir.exists() and not workdir.is_dir():
        raise UsageError(f"work directory '{workdir}' exists and is not a directory; pass another -w")
    for parent in workdir.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"work directory '{workdir}' is under '{parent}', which is a file; pass another -w")
            break
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with artifacts.atomic_output(workdir / ".sk-edge-write-probe") as tmp:
            tmp.write_bytes(b"sk-edge")
        (workdir / ".sk-edge-write-probe").unlink()
    except OSError as exc:
        raise SkEdgeError(f"cannot write in work directory '{workdir}': {describe_os_error(exc)}") from None


def remove_stale_temporaries(workdir: Path) -> list[str]:
    """Temporary files of sk-edge's own naming left by a run killed inside its write window.

    Only called while holding the work directory's lock, so no live sk-edge process owns them.
    """
    removed = []
    for path in workdir.iterdir():
        name = path.name
        if _ATOMIC_TEMPORARY.match(name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
        elif name in _RENDER_TEMPORARIES and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            continue  # a user's own ".something.tmp" is never touched
        removed.append(name)
    return removed


_HELD: dict[str, bool] = {}  # real paths of the work directories this process holds


@contextlib.contextmanager
def locked(workdir: str | os.PathLike, log=lambda msg: None) -> Iterator[Path]:
    """Hold ``workdir`` for one command: writable, exclusively locked, without stale temporaries.

    The lock is an flock on the directory itself (nothing is left behind in it, and it is
    released when the process ends, however it ends). A second sk-edge command on the same
    work directory fails at once with one line, instead of interleaving its writes with the first.
    """
    import fcntl

    workdir = Path(workdir)
    key = os.path.realpath(workdir)
    if _HELD.get(key):  # this process holds it already (sk_edge.build called by the CLI): one lock, not two
        yield workdir
        return
    created = not workdir.exists()
    _check_writable(workdir)
    try:
        fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise SkEdgeError(f"cannot lock work directory '{workdir}': {describe_os_error(exc)}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SkEdgeError(
                f"work directory '{workdir}' is in use by another sk-edge command; wait for it to finish or pass another -w"
            ) from None
        removed = remove_stale_temporaries(workdir)
        if removed:
            log(f"removed {len(removed)} temporary file(s) left by an interrupted run: {', '.join(removed[:3])}")
        _HELD[key] = True
        yield workdir
    finally:
        _HELD.pop(key, None)
        os.close(fd)  # releases the lock
        if created:  # a command that wrote nothing leaves no empty folder behind
            with contextlib.suppress(OSError):
                workdir.rmdir()


def describe_os_error(exc: OSError) -> str:
    """An OSError as a short phrase with what to do about it."""
    what = exc.strerror or type(exc).__name__
    where = f" ('{exc.filename}')" if exc.filename else ""
    hint = {
        errno.ENOSPC: "free some disk space or pass a -w on another disk",
        errno.EDQUOT: "free some disk space or pass a -w on another disk",
        errno.EROFS: "the file system is read-only; pass a writable -w",
        errno.EACCES: "no permission; pass a -w you can write to",
        errno.EPERM: "no permission; pass a -w you can write to",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.ENOENT: "check the path",
    }.get(exc.errno or 0, "check the path and the disk")
    return f"{what}{where}; {hint}"
