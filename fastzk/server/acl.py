"""ACL evaluation and authentication schemes (world, auth, digest, ip, x509, sasl, super).

A connection's identities are a set of (scheme, id) pairs: ("ip", addr) from accept time,
("digest", "user:hash") per digest auth packet, ("x509", subject DN) from a verified TLS
client certificate, ("sasl", user) after a SASL exchange, ("super", "") when the digest,
certificate or SASL user is the operator's super user.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Collection, Iterable, Iterator, Sequence

Identity = tuple[str, str]
Identities = Collection[Identity]  # a connection's: a dict in the order they were gained
ACLEntry = tuple[int, str, str]
# schemes whose identities an `auth` ACL entry stands for (ZooKeeper: isAuthenticated())
AUTHENTICATED = frozenset({"digest", "x509", "sasl"})


def digest_id(credentials: str) -> str:
    """user:password -> user:base64(sha1(user:password)), the id digest ACLs store."""
    user = credentials.split(":", 1)[0]
    hashed = hashlib.sha1(credentials.encode("utf-8")).digest()
    return f"{user}:{base64.b64encode(hashed).decode('ascii')}"


def _ip_network(pattern: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """An ip ACL id: an address, or address/prefix-length as ZooKeeper reads it. Python's
    ipaddress also reads address/netmask and address/hostmask, which ZooKeeper refuses (and
    a hostmask would silently mean a different network), so the prefix must be a number."""
    _, slash, bits = pattern.partition("/")
    if slash and not (bits.isascii() and bits.isdigit()):
        return None
    try:
        return ipaddress.ip_network(pattern, strict=False)
    except ValueError:
        return None


def _ip_matches(pattern: str, address: str) -> bool:
    network = _ip_network(pattern)
    try:
        return network is not None and ipaddress.ip_address(address) in network
    except ValueError:
        return False


def _valid_ip_pattern(pattern: str) -> bool:
    return _ip_network(pattern) is not None


def _valid_digest_id(ident: str) -> bool:
    parts = ident.split(":")
    while parts and parts[-1] == "":
        parts.pop()
    return len(parts) == 2


_KERBEROS_NAME = re.compile(r"[^/@]*(/[^/@]*)?@[^/@]*")


def _valid_sasl_id(ident: str) -> bool:
    """ZooKeeper's SASLAuthenticationProvider takes any id its KerberosName parses: a name with
    an @ must be name[/host]@REALM."""
    return "@" not in ident or _KERBEROS_NAME.fullmatch(ident) is not None


def check(acl: Sequence[ACLEntry], perm: int, identities: Collection[Identity]) -> bool:
    """True when `identities` hold `perm` on a node with `acl` (any overlapping bit suffices)."""
    if not acl:
        return True
    for perms, scheme, ident in acl:
        if perms & perm and scheme == "world" and ident == "anyone":
            return True
    if ("super", "") in identities:
        return True
    for perms, scheme, ident in acl:
        if not perms & perm:
            continue
        if scheme == "world":
            if ident == "anyone":
                return True
        elif scheme == "ip":
            for id_scheme, id_value in identities:
                if id_scheme == "ip" and _ip_matches(ident, id_value):
                    return True
        elif (scheme, ident) in identities:
            return True
    return False


def _java_hash(text: str) -> int:
    """String.hashCode: over UTF-16 code units, as an unsigned 32-bit value."""
    h = 0
    data = text.encode("utf-16-be", "surrogatepass")
    for i in range(0, len(data), 2):
        h = (31 * h + (data[i] << 8 | data[i + 1])) & 0xFFFFFFFF
    return h


def _id_hash(identity: Identity) -> int:
    """Id.hashCode (37 * (37 * 17 + scheme.hashCode()) + id.hashCode()), spread as
    ConcurrentHashMap spreads it (h ^ h >>> 16, sign bit cleared)."""
    h = (37 * (37 * 17 + _java_hash(identity[0])) + _java_hash(identity[1])) & 0xFFFFFFFF
    return (h ^ (h >> 16)) & 0x7FFFFFFF


# ConcurrentHashMap's constants (OpenJDK 17)
_CHM_CAPACITY = 16
_CHM_TREEIFY = 8  # a bin that already holds this many becomes a tree bin on the next add...
_CHM_MIN_TREEIFY_CAPACITY = 64  # ...if the table has this many bins; else the table grows
_CHM_UNTREEIFY = 6  # a tree bin split by a resize into a half this small becomes a list


class _IdMap:
    """The bins of the ConcurrentHashMap<Id> behind a ZooKeeper connection's authInfo, with
    what decides its iteration order: bins in index order, each a list in insertion order,
    except that a tree bin puts a new entry first; the table grows when its size reaches
    three quarters of it, and a resize moves each list bin's last run of entries that go the
    same way as it is and puts the entries before it, reversed, in front (lo and hi halves
    alike); a tree bin splits keeping its order. Entries are (spread hash, identity)."""

    __slots__ = ("bins", "trees", "size", "size_ctl")

    def __init__(self) -> None:
        self.bins: list[list[tuple[int, Identity]]] = [[] for _ in range(_CHM_CAPACITY)]
        self.trees = [False] * _CHM_CAPACITY
        self.size = 0
        self.size_ctl = _CHM_CAPACITY - (_CHM_CAPACITY >> 2)

    def add(self, identity: Identity) -> None:
        """A new identity (the caller's dict already drops duplicates)."""
        h = _id_hash(identity)
        i = h & (len(self.bins) - 1)
        held = self.bins[i]
        if self.trees[i]:
            held.insert(0, (h, identity))
        else:
            held.append((h, identity))
            if len(held) > _CHM_TREEIFY:
                if len(self.bins) < _CHM_MIN_TREEIFY_CAPACITY:
                    self._presize(len(self.bins) << 1)
                else:
                    self.trees[i] = True
        self.size += 1
        while self.size >= self.size_ctl:
            self._transfer()

    def _presize(self, size: int) -> None:
        """tryPresize: doubles until the table could take 1.5 * size + 1 entries, judged
        against the resize threshold (so 16 bins asked for 32 end at 128)."""
        target = 1 << (size + (size >> 1)).bit_length()  # tableSizeFor(1.5 * size + 1)
        while target > self.size_ctl:
            self._transfer()

    def _transfer(self) -> None:
        n = len(self.bins)
        bins: list[list[tuple[int, Identity]]] = [[] for _ in range(2 * n)]
        trees = [False] * (2 * n)
        for i, held in enumerate(self.bins):
            if not held:
                continue
            if self.trees[i]:
                lo = [e for e in held if not e[0] & n]
                hi = [e for e in held if e[0] & n]
                trees[i] = len(lo) > _CHM_UNTREEIFY
                trees[i + n] = len(hi) > _CHM_UNTREEIFY
            else:
                lo, hi = [], []
                start = len(held) - 1  # the last run of entries that go the same way
                while start > 0 and held[start - 1][0] & n == held[-1][0] & n:
                    start -= 1
                for entry in held[start:]:
                    (hi if entry[0] & n else lo).append(entry)
                for entry in held[:start]:
                    (hi if entry[0] & n else lo).insert(0, entry)
            bins[i], bins[i + n] = lo, hi
        self.bins, self.trees = bins, trees
        self.size_ctl = 2 * n - (n >> 1)

    def __iter__(self) -> Iterator[Identity]:
        for held in self.bins:
            for _, identity in held:
                yield identity


def zookeeper_order(identities: Iterable[Identity]) -> list[Identity]:
    """A connection's identities (given in the order it gained them) in the order ZooKeeper
    lists them, in whoAmI and when it expands an `auth` ACL entry: its authInfo is a set over
    a ConcurrentHashMap<Id> (`_IdMap`), which the identities fill in that order."""
    table = _IdMap()
    for identity in identities:
        table.add(identity)
    return list(table)


def fix_acl(acl: list[ACLEntry] | None, identities: Collection[Identity],
            sasl: bool = False) -> list[ACLEntry] | None:
    """Validates a create/setACL list and expands `auth` entries; None means INVALIDACL.
    `sasl`: the sasl scheme has a provider (without one ZooKeeper refuses sasl entries)."""
    if not acl:
        return None
    result: list[ACLEntry] = []
    for perms, scheme, ident in acl:
        if scheme == "world":
            if ident != "anyone":
                return None
            expanded = [(perms, scheme, ident)]
        elif scheme == "auth":
            expanded = [(perms, s, i) for s, i in zookeeper_order(identities)
                        if s in AUTHENTICATED]
            if not expanded:
                return None
        elif scheme == "digest":
            if not _valid_digest_id(ident):
                return None
            expanded = [(perms, scheme, ident)]
        elif scheme == "ip":
            if not _valid_ip_pattern(ident):
                return None
            expanded = [(perms, scheme, ident)]
        elif scheme == "x509":
            if not ident:
                return None
            expanded = [(perms, scheme, ident)]
        elif scheme == "sasl":
            if not sasl or not _valid_sasl_id(ident):
                return None
            expanded = [(perms, scheme, ident)]
        else:
            return None
        for entry in expanded:
            if entry not in result:
                result.append(entry)
    return result


def mask_digests(acl: list[ACLEntry]) -> list[ACLEntry]:
    """getACL without ADMIN shows digest ids as user:x."""
    return [
        (p, s, i.split(":", 1)[0] + ":x" if s == "digest" else i) for p, s, i in acl
    ]
