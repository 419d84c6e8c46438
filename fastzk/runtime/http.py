"""The HTTP admin endpoint (ZooKeeper's AdminServer shape) on the server's own event loop.

GET /commands             the command names
GET /commands/<name>      one command as JSON ({"command": ..., "error": null, ...fields})
GET /metrics              Prometheus exposition
GET /ready                200 when the server can serve writes now, else 503
GET /backup[?since=ZXID]  a backup stream (fastzk/backup/stream.py; protected, see below)

Deliberately tiny: GET only, one request per connection, bounded request size.

Commands that reveal sessions, connections and watches or reset counters, and `/backup` (the
whole tree), need what ZooKeeper 3.9.4+ asks of its authenticated admin commands: an identity
holding every permission on the root znode, checked one permission at a time (3.9.0-3.9.3
accepted any one of them). The identities are the client's address (ip), an `Authorization:
digest user:password` header and, over HTTPS with a verified client certificate, its x509
subject; while "/" keeps its default world:anyone ACL nothing changes for anyone.

HTTPS as ZooKeeper's AdminServer does it: admin.forceHttps (only HTTPS) or
admin.portUnification (HTTPS and HTTP on the port, told apart by the first byte), the
ssl.quorum.* stores, admin.needClientAuth to require a client certificate; changed certificate
files are reloaded for new connections.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from fastzk.backup.format import BackupError
from fastzk.backup.stream import BackupStream, parse_since
from fastzk.proto import Perm
from fastzk.runtime import admin
from fastzk.runtime.metrics import exposition, registry_for
from fastzk.runtime.tls import Contexts, SecureListener, x509_id
from fastzk.server import acl as acls

if TYPE_CHECKING:
    from fastzk.runtime.view import ServerView

log = logging.getLogger("fastzk.http")
MAX_REQUEST = 16 * 1024
REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 410: "Gone", 503: "Service Unavailable"}
PROTECTED = frozenset({"connections", "connection_stat_reset", "dump", "stat_reset", "watches",
                       "watches_by_path"})
PERMISSIONS = (Perm.READ, Perm.WRITE, Perm.CREATE, Perm.DELETE, Perm.ADMIN)


class AdminProtocol(asyncio.Protocol):
    def __init__(self, server: ServerView, registry: object) -> None:
        self.server = server
        self.registry = registry
        self.data = b""
        self.transport: asyncio.Transport | None = None
        self.address = ""
        self.authorization = ""
        self.x509 = ""  # the subject of a verified client certificate (HTTPS)
        self.backup: BackupStream | None = None  # a /backup response in progress

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.address = peer[0] if peer else ""
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            self.x509 = x509_id(der)

    def pause_writing(self) -> None:
        if self.backup is not None:
            self.backup.pause()

    def resume_writing(self) -> None:
        if self.backup is not None:
            self.backup.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.backup is not None:
            self.backup.lost()

    def data_received(self, data: bytes) -> None:
        if self.backup is not None:
            return  # one request per connection: the backup is being sent
        self.data += data
        if b"\r\n\r\n" not in self.data and b"\n\n" not in self.data:
            if len(self.data) > MAX_REQUEST:
                self._respond(400, b"request too large\n", "text/plain")
            return
        head = self.data.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("latin-1")
        request_line, *header_lines = head.split("\n")
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "authorization":
                self.authorization = value.strip()
        parts = request_line.split()
        if len(parts) != 3:
            self._respond(400, b"bad request line\n", "text/plain")
        elif parts[0] != "GET":
            self._respond(405, b"only GET is supported\n", "text/plain")
        else:
            path, _, query = parts[1].partition("?")
            self._route(path, query)

    def _route(self, path: str, query: str = "") -> None:
        server = self.server
        if path == "/backup":
            self._backup(query)
        elif path == "/metrics":
            self._respond(200, exposition(self.registry), CONTENT_TYPE_LATEST)  # type: ignore[arg-type]
        elif path == "/ready":
            ready, reason = server.ready()
            self._json(200 if ready else 503, {"ready": ready, "reason": reason})
        elif path in ("/commands", "/commands/"):
            names = sorted(admin.COMMANDS)
            self._json(200, {"commands": names,
                             "links": {name: f"/commands/{name}" for name in names}})
        elif path.startswith("/commands/"):
            name = path[len("/commands/"):]
            if admin.ALIASES.get(name, name) in PROTECTED and not self._authorized():
                self._json(403, {"command": name, "error": (
                    "this command needs an identity with every permission on / (send "
                    "'Authorization: digest user:password' for a digest identity in its ACL)")})
                return
            self._json(200, admin.run_command(name, server))
        else:
            self._respond(404, b"not found\n", "text/plain")

    def _backup(self, query: str) -> None:
        """Starts streaming a backup (the guard of the protected commands applies)."""
        if not self._authorized():
            self._json(403, {"error": "a backup needs an identity with every permission on / "
                                      "(send 'Authorization: digest user:password')"})
            return
        try:
            since = parse_since(query)
        except ValueError:
            self._json(400, {"error": f"bad query {query!r}: since=ZXID expected"})
            return
        assert self.transport is not None
        try:
            self.backup = BackupStream(self.server, self.transport, since)
        except BackupError as error:
            self._json(410, {"error": str(error)})
            return
        self.server.loop.create_task(self.backup.run())

    def _authorized(self) -> bool:
        identities = {("ip", self.address)}
        if self.x509:
            identities.add(("x509", self.x509))
        scheme, _, credentials = self.authorization.partition(" ")
        if scheme.lower() == "digest" and credentials:
            identity = acls.digest_id(credentials.strip())
            identities.add(("digest", identity))
            if identity == self.server.cfg.super_digest:
                identities.add(("super", ""))
        elif self.authorization:
            return False  # a scheme this endpoint does not know proves nothing
        found = self.server.node.tree.get_acl("/")
        acl = found[0] if found is not None else []
        return all(acls.check(acl, perm, identities) for perm in PERMISSIONS)

    def _json(self, status: int, body: dict) -> None:
        self._respond(status, json.dumps(body, indent=2, default=str).encode(),
                      "application/json")

    def _respond(self, status: int, body: bytes, content_type: str) -> None:
        assert self.transport is not None
        head = (
            f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        self.transport.write(head.encode("latin-1") + body)
        self.transport.close()


class AdminListener:
    """The admin port: plain HTTP through asyncio's server, or HTTPS (alone or beside HTTP)
    through the TLS listener the client port uses, whose contexts follow the files."""

    def __init__(self, server: ServerView) -> None:
        self.server = server
        settings = server.cfg.admin_tls
        self.tls = Contexts(settings) if settings is not None else None
        self._plain: asyncio.base_events.Server | None = None
        self._secure: SecureListener | None = None

    async def start(self) -> None:
        """Listens on admin.serverAddress:admin.serverPort; a busy port is logged, not fatal,
        as the client port is what clients need."""
        server, cfg = self.server, self.server.cfg
        registry = registry_for(server)
        try:
            if self.tls is not None:
                self._secure = SecureListener(server.loop, self.tls,
                                              lambda: AdminProtocol(server, registry),
                                              unified=cfg.admin_unified)
                self._secure.start(cfg.admin_address, cfg.admin_port)
            else:
                self._plain = await server.loop.create_server(
                    lambda: AdminProtocol(server, registry),
                    host=cfg.admin_address, port=cfg.admin_port, reuse_address=True)
        except OSError as error:
            log.warning("admin server not started on %s:%d: %s", cfg.admin_address,
                        cfg.admin_port, error.strerror)

    def reload_tls(self) -> None:
        if self.tls is not None:
            self.tls.reload_if_changed()

    def close(self) -> None:
        if self._secure is not None:
            self._secure.close()
        if self._plain is not None:
            self._plain.close()
