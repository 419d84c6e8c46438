"""The backup stream and the backup directory, shared by the server and the tools.

Stream (the body of `GET /backup`): the 8-byte magic `FZKBAK01`, then frames of u8 kind, u32
length, payload:
  b"F" + a file name ("snapshot.<16 hex>" or "log.<16 hex>"): the next file begins
  b"D" + bytes of the current file (at most CHUNK)
  b"M" + the manifest (JSON, below): the stream is complete; nothing follows
  b"X" + an error message: the server gave up; nothing follows
The files are fastzk's own formats (runtime/snapshot.py, runtime/wal.py), so a backup
directory reads like a data dir's `fastzk/` directory and every existing check applies to it.
A stream that ends without "M" (the connection cut, the server killed) is incomplete.

Directory: those files plus `manifest.json`, written last (temp file, fsync, rename,
directory fsync) and only once every file's size and SHA-256 match what the server sent. No
manifest means an incomplete backup; restore verifies each file against it again.

Manifest: {"format": 1, "kind": "full" | "incremental", "id": ..., "server_id": ...,
"created_ms": ..., "snapshot": {"name", "start_zxid", "end_zxid"} (full only),
"since_zxid": the previous backup's last_zxid (incremental only), "base": {"id", "path"}
(incremental only, filled in by the client), "last_zxid": the last txn shipped (committed),
"files": [{"name", "size", "sha256"}], "complete": true}.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

from fastzk.runtime.wal import fsync_dir

MAGIC = b"FZKBAK01"
FRAME = struct.Struct(">BI")
CHUNK = 1 << 20  # bytes per data frame, and per read of a log segment
FORMAT = 1
MANIFEST = "manifest.json"
FILE, DATA, END, ERROR = b"F"[0], b"D"[0], b"M"[0], b"X"[0]


class BackupError(Exception):
    """A backup that is missing, incomplete or corrupt, or a request it cannot serve; the
    message names the file and what is wrong, for the operator."""


def frame(kind: int, payload: bytes) -> bytes:
    return FRAME.pack(kind, len(payload)) + payload


def valid_name(name: str) -> bool:
    """Only the two file kinds a backup holds, and never a path: the client writes what the
    stream names, so a name must not reach outside the backup directory."""
    for prefix in ("snapshot.", "log."):
        if name.startswith(prefix) and len(name) == len(prefix) + 16:
            try:
                int(name[len(prefix):], 16)
            except ValueError:
                return False
            return True
    return False


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """temp + fsync + rename + directory fsync: the manifest exists only once complete."""
    tmp = directory / (MANIFEST + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(tmp, directory / MANIFEST)
    fsync_dir(directory)


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a complete backup, its files checked against it (size, SHA-256)."""
    path = directory / MANIFEST
    if not directory.is_dir():
        raise BackupError(f"{directory}: no such backup directory")
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BackupError(f"{directory}: incomplete backup (no {MANIFEST}: the backup was "
                          "interrupted before it finished)") from None
    except (OSError, ValueError) as error:
        raise BackupError(f"{path}: unreadable manifest ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: not a fastzk backup manifest")
    if manifest.get("complete") is not True:
        raise BackupError(f"{directory}: incomplete backup (it was interrupted before its end; "
                          "take it again)")
    for entry in manifest.get("files", []):
        name = entry.get("name", "")
        file = directory / name
        if not valid_name(name):
            raise BackupError(f"{path}: bad file name {name!r}")
        try:
            size = file.stat().st_size
        except FileNotFoundError:
            raise BackupError(f"{file}: missing (listed in {MANIFEST})") from None
        if size != entry["size"]:
            raise BackupError(f"{file}: {size} bytes, the manifest says {entry['size']} "
                              "(truncated or changed)")
        if sha256_file(file) != entry["sha256"]:
            raise BackupError(f"{file}: SHA-256 mismatch (corrupt or changed)")
    return manifest


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            data = handle.read(CHUNK)
            if not data:
                return digest.hexdigest()
            digest.update(data)
