"""The big-endian jute encoding ZooKeeper writes its files in, read from memory with the
offset of every failure, so a corrupt file is reported as "file, offset, what".

Layouts (zookeeper.jute): int = 4 bytes, long = 8, boolean = 1, buffer and ustring = int length
(-1 for null) + bytes, vector = int count (-1 for null) + items."""

from __future__ import annotations

import struct

INT = struct.Struct(">i")
LONG = struct.Struct(">q")


class ZkFormatError(Exception):
    """A ZooKeeper file that cannot be read: the message names the file and the offset."""

    def __init__(self, name: str, offset: int, problem: str) -> None:
        super().__init__(f"{name} offset {offset}: {problem}")
        self.name = name
        self.offset = offset
        self.problem = problem


class Reader:
    """A cursor over bytes. `name` and `base` (the offset of `data[0]` in the file) only make
    error messages point at the right place."""

    __slots__ = ("data", "pos", "name", "base", "end")

    def __init__(self, data: bytes | memoryview, name: str, base: int = 0) -> None:
        self.data = data
        self.pos = 0
        self.name = name
        self.base = base
        self.end = len(data)

    def fail(self, problem: str, at: int | None = None) -> ZkFormatError:
        return ZkFormatError(self.name, self.base + (self.pos if at is None else at), problem)

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.end:
            raise self.fail(f"truncated: {what} needs {n} bytes, {self.end - self.pos} left")

    def int(self, what: str = "int") -> int:
        self.need(4, what)
        value = INT.unpack_from(self.data, self.pos)[0]
        self.pos += 4
        return value

    def long(self, what: str = "long") -> int:
        self.need(8, what)
        value = LONG.unpack_from(self.data, self.pos)[0]
        self.pos += 8
        return value

    def bool(self, what: str = "boolean") -> bool:
        self.need(1, what)
        value = self.data[self.pos]
        self.pos += 1
        return value != 0

    def buffer(self, what: str = "buffer") -> bytes | None:
        start = self.pos
        n = self.int(what)
        if n == -1:
            return None
        if n < 0:
            raise self.fail(f"{what}: negative length {n}", start)
        self.need(n, what)
        value = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return value

    def string(self, what: str = "string") -> str:
        value = self.buffer(what)
        if value is None:
            return ""
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("utf-8", "surrogatepass")

    def count(self, what: str, min_item: int) -> int:
        """A vector's item count, checked against what is left (min_item bytes per item)."""
        start = self.pos
        n = self.int(what)
        if n == -1:
            return 0
        if n < 0 or n * min_item > self.end - self.pos:
            raise self.fail(f"{what}: implausible count {n}", start)
        return n

    def acl_list(self, what: str = "acl") -> list[tuple[int, str, str]]:
        """vector<ACL>: ACL = int perms, Id(ustring scheme, ustring id)."""
        return [(self.int(what), self.string(what), self.string(what))
                for _ in range(self.count(what, 12))]


def put_buffer(parts: list[bytes], value: bytes | None) -> None:
    if value is None:
        parts.append(INT.pack(-1))
    else:
        parts.append(INT.pack(len(value)))
        parts.append(value)


def put_string(parts: list[bytes], value: str) -> None:
    put_buffer(parts, value.encode("utf-8", "surrogatepass"))
