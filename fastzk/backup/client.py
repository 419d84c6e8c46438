"""`fastzk backup --server HOST:ADMINPORT OUT [--since BACKUP]`: receives a backup stream
(backup/format.py) into the directory OUT.

OUT gets a manifest saying "complete": false before the first file, and the server's manifest,
marked complete, only after the end frame has arrived, every file's size and SHA-256 match
it, the snapshot verifies and the log verifies and covers what the manifest promises. So an
interrupted backup always reads as incomplete, whatever was cut: the connection, the client
or the server.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from fastzk.backup import format as fmt
from fastzk.runtime import snapshot as snapshots
from fastzk.runtime import wal

TIMEOUT_S = 60.0  # a server that sends nothing for this long is taken for dead


def backup(server: str, out_dir: Path, since: Path | None, auth: str | None,
           out: TextIO) -> int:
    """Takes one backup; 0 when it is complete, otherwise BackupError."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise fmt.BackupError(f"{out_dir} exists and is not an empty directory")
    base: dict[str, Any] | None = None
    query = ""
    if since is not None:
        previous = fmt.read_manifest(Path(since))
        base = {"id": previous["id"], "path": str(Path(since).resolve())}
        query = f"?since={previous['last_zxid']}"
    host, _, port = server.rpartition(":")
    if not host or not port.isdigit():
        raise fmt.BackupError(f"--server {server!r}: HOST:ADMINPORT expected")
    headers = {}
    if auth:
        headers["Authorization"] = "digest " + auth
    connection = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT_S)
    try:
        try:
            connection.request("GET", "/backup" + query, headers=headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as error:
            raise fmt.BackupError(f"cannot reach the admin endpoint {server}: {error}") from None
        if response.status != 200:
            raise fmt.BackupError(f"{server} refused the backup: HTTP {response.status} "
                                  f"{_error_of(response.read())}")
        out_dir.mkdir(parents=True, exist_ok=True)
        backup_id = uuid.uuid4().hex
        fmt.write_manifest(out_dir, {"format": fmt.FORMAT, "id": backup_id, "complete": False})
        manifest = _receive(response, out_dir)
    finally:
        connection.close()
    manifest.update(id=backup_id, complete=True)
    if base is not None:
        manifest["base"] = base
    _check(out_dir, manifest)
    fmt.write_manifest(out_dir, manifest)
    what = "full backup" if manifest["kind"] == "full" else (
        f"incremental backup after zxid {manifest['since_zxid']:#x}")
    print(f"{what} of {server} through zxid {manifest['last_zxid']:#x}: "
          f"{len(manifest['files'])} file(s), "
          f"{sum(f['size'] for f in manifest['files'])} bytes in {out_dir}", file=out)
    return 0


def _error_of(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace").strip()


def _read(response: http.client.HTTPResponse, size: int) -> bytes:
    """Exactly `size` bytes of the body; BackupError when the stream ends first."""
    parts = []
    while size:
        try:
            data = response.read(size)
        except (OSError, http.client.HTTPException) as error:
            raise fmt.BackupError(f"incomplete backup: the stream broke ({error})") from None
        if not data:
            raise fmt.BackupError("incomplete backup: the stream ended before its end marker "
                                  "(the server or the connection went away)")
        parts.append(data)
        size -= len(data)
    return b"".join(parts)


def _receive(response: http.client.HTTPResponse, out_dir: Path) -> dict[str, Any]:
    """Writes the streamed files (each fsynced when the next begins); returns the manifest."""
    if _read(response, len(fmt.MAGIC)) != fmt.MAGIC:
        raise fmt.BackupError("the server did not send a fastzk backup stream")
    current: BinaryIO | None = None
    try:
        while True:
            kind, length = fmt.FRAME.unpack(_read(response, fmt.FRAME.size))
            payload = _read(response, length)
            if kind == fmt.DATA and current is not None:
                current.write(payload)
                continue
            if current is not None:
                _close(current)
                current = None
            if kind == fmt.FILE:
                name = payload.decode("ascii", "replace")
                if not fmt.valid_name(name) or (out_dir / name).exists():
                    raise fmt.BackupError(f"the stream names a bad file {name!r}")
                current = open(out_dir / name, "wb")  # noqa: SIM115 - closed by _close
            elif kind == fmt.END:
                wal.fsync_dir(out_dir)
                return json.loads(payload)
            elif kind == fmt.ERROR:
                raise fmt.BackupError(f"the server stopped the backup: "
                                      f"{payload.decode('utf-8', 'replace')}")
            else:
                raise fmt.BackupError(f"unexpected frame {kind:#x} in the backup stream")
    finally:
        if current is not None:
            current.close()


def _close(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


def _check(out_dir: Path, manifest: dict[str, Any]) -> None:
    """What the manifest promises holds on disk: files, snapshot, log coverage."""
    written = sorted(p.name for p in out_dir.iterdir() if p.name != fmt.MANIFEST)
    listed = sorted(entry["name"] for entry in manifest["files"])
    if written != listed:
        raise fmt.BackupError(f"{out_dir}: files {written} but the manifest lists {listed}")
    for entry in manifest["files"]:
        path = out_dir / entry["name"]
        if path.stat().st_size != entry["size"] or fmt.sha256_file(path) != entry["sha256"]:
            raise fmt.BackupError(f"{path}: does not match what the server sent")
    if manifest["kind"] == "full":
        after = manifest["snapshot"]["start_zxid"]
        try:
            info = snapshots.verify(out_dir / manifest["snapshot"]["name"])
        except snapshots.SnapshotError as error:
            raise fmt.BackupError(str(error)) from None
        if (info.zxid, info.end_zxid) != (after, manifest["snapshot"]["end_zxid"]):
            raise fmt.BackupError(f"{out_dir}: the snapshot's zxids differ from the manifest")
    else:
        after = manifest["since_zxid"]
    try:
        state = wal.verify_log(out_dir, after)
    except wal.RecoveryError as error:
        raise fmt.BackupError(str(error)) from None
    last = manifest["last_zxid"]
    if last > after and (state.first_zxid > after + 1 or state.last_zxid != last):
        raise fmt.BackupError(f"{out_dir}: the log holds {state.first_zxid:#x} to "
                              f"{state.last_zxid:#x}, the backup needs {after + 1:#x} to "
                              f"{last:#x}")


def main(server: str, out_dir: Path, since: Path | None, auth: str | None) -> int:
    try:
        return backup(server, out_dir, since, auth, sys.stdout)
    except fmt.BackupError as error:
        print(f"fastzk backup: {error}", file=sys.stderr)
        return 1
