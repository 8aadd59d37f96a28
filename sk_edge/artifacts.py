"""Artifacts on disk: atomic writes, content hashes and JSON sidecars.

Every stage writes its outputs through :func:`atomic_output`, so an interrupted run
leaves the previous file (or nothing), never half a file. Every stage records what made
its outputs in a sidecar (``export.json``, ``calib.json``...) that holds a *key*: the
hash of the tool version, the input hashes and the settings. A stage whose key and
output hashes still match is up to date and can be skipped.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from . import __version__

SIDECAR_SCHEMA = 1


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def stage_key(payload: dict[str, Any]) -> str:
    """Hash of a JSON-able description of a stage's inputs and settings."""
    text = json.dumps({"tool_version": __version__, **payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary file lives in the same directory so the final ``os.replace`` is atomic
    on POSIX and Windows. On any exception the temporary file is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the artifact the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing or not valid JSON."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def sidecar(kind: str, key: str, outputs: dict[str, Path], **sections: Any) -> dict[str, Any]:
    """A sidecar document: what made ``outputs`` and their hashes."""
    return {
        "kind": f"sk-edge/{kind}",
        "schema": SIDECAR_SCHEMA,
        "tool": {"name": "sk-edge", "version": __version__},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "key": key,
        "outputs": {name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for name, p in outputs.items()},
        **sections,
    }


def up_to_date(sidecar_path: str | os.PathLike, key: str) -> dict[str, Any] | None:
    """The sidecar when it was written for ``key`` and every output it lists is intact; else None."""
    sidecar_path = Path(sidecar_path)
    data = read_json(sidecar_path)
    if data is None or data.get("key") != key or not data.get("outputs"):
        return None
    for name, meta in data["outputs"].items():
        out = sidecar_path.parent / name
        if not out.is_file() or out.stat().st_size != meta.get("bytes"):
            return None
        if sha256_file(out) != meta.get("sha256"):
            return None
    return data
