"""A small tmpfs as one member's dataDir, so that a nemesis can fill its disk and free it.

Why a tmpfs: filling the machine's real disk would hurt everyone else on it; a tmpfs of a
few hundred MB is private to the run, fills in an instant (``posix_fallocate``) and is gone
after ``umount``.  Mounting needs root; :func:`can_mount` says whether the fault is possible.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

FILLER_NAME = "nemesis-filler"
#: Bytes written per call once ``posix_fallocate`` has taken the bulk of the free space.
CHUNK = 64 * 1024
MOUNT_TIMEOUT_S = 30.0


def can_mount() -> bool:
    """True when this process may mount a tmpfs (root with a ``mount`` command)."""
    return os.geteuid() == 0 and shutil.which("mount") is not None


class SmallDisk:
    """A tmpfs of *size_mb* mounted on *path* (which keeps its previous files: they are
    copied in), with a filler file that takes every free byte while the disk is "full"."""

    def __init__(self, path: Path, size_mb: int) -> None:
        self.path = path
        self.size_mb = size_mb
        self.full = False
        saved = Path(tempfile.mkdtemp(prefix="nemesis-disk-"))
        shutil.copytree(path, saved, dirs_exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
            check=True, timeout=MOUNT_TIMEOUT_S,
        )
        self.mounted = True
        shutil.copytree(saved, path, dirs_exist_ok=True)
        shutil.rmtree(saved, ignore_errors=True)

    def fill(self) -> None:
        """Take every free byte: the server's next write or preallocation gets ENOSPC."""
        filler = self.path / FILLER_NAME
        with open(filler, "ab", buffering=0) as handle:
            free = shutil.disk_usage(self.path).free
            try:
                os.posix_fallocate(handle.fileno(), handle.tell(), max(free - CHUNK, 1))
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
            block = b"\0" * CHUNK
            try:
                while True:
                    handle.write(block)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
        self.full = True

    def free(self) -> None:
        """Remove the filler: the disk has room again."""
        (self.path / FILLER_NAME).unlink(missing_ok=True)
        self.full = False

    def unmount(self, keep_files: bool) -> None:
        """Unmount (the server must be stopped); with *keep_files* the dataDir's contents
        are copied back onto the underlying directory first, for the post-mortem."""
        if not self.mounted:
            return
        self.free()
        saved = Path(tempfile.mkdtemp(prefix="nemesis-disk-")) if keep_files else None
        if saved is not None:
            shutil.copytree(self.path, saved, dirs_exist_ok=True)
        subprocess.run(["umount", "-l", str(self.path)], check=False, timeout=MOUNT_TIMEOUT_S)
        self.mounted = False
        if saved is not None:
            shutil.copytree(saved, self.path, dirs_exist_ok=True)
            shutil.rmtree(saved, ignore_errors=True)
