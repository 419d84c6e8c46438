"""GSS-API (Kerberos V5) acceptor contexts for SASL GSSAPI, through python-gssapi (MIT or
Heimdal libgssapi underneath).

Imported only when the JAAS `Server` section is a Krb5LoginModule, so that a server without
Kerberos needs neither the `gssapi` package nor the Kerberos libraries. The acceptor is bound
to the principal the JAAS section names, with its keys from the section's keyTab (or, without
one, from KRB5_KTNAME / the default keytab): as in ZooKeeper, a ticket for any other service
is refused even when the keytab happens to hold its key.
"""

from __future__ import annotations

from typing import Any

from fastzk.server.sasl import GssapiLogin, KerberosNames, SaslError


class GssUnavailable(Exception):
    """The server's Kerberos login cannot work; the message says why, for a start-up error."""


def _import_gssapi() -> Any:
    try:
        import gssapi
    except ImportError as error:
        raise GssUnavailable(f"Kerberos needs the Python package gssapi (pip install gssapi; "
                             f"it needs the Kerberos libraries, e.g. Debian's libkrb5-dev to "
                             f"build): {error}") from None
    return gssapi


def _message(error: Exception) -> str:
    """GSSError's text spans lines (major and minor status); one line for the log."""
    return " ".join(str(error).split())


class GssAcceptor:
    """`sasl.Acceptor` over one gssapi.SecurityContext."""

    def __init__(self, gssapi: Any, creds: Any) -> None:
        self._gssapi = gssapi
        self._context = gssapi.SecurityContext(creds=creds, usage="accept")
        self.complete = False
        self.initiator = ""

    def step(self, token: bytes) -> bytes | None:
        try:
            reply = self._context.step(token)
            # python-gssapi defers a failure that comes with an error token for the client
            # (a KRB-ERROR) until the context is next used: read its state here, so that the
            # failure is raised now. ZooKeeper sends no error token either.
            self.complete = bool(self._context.complete)
            if self.complete:
                self.initiator = str(self._context.initiator_name)
        except self._gssapi.exceptions.GSSError as error:
            raise SaslError(f"GSSAPI: cannot accept the client's token: {_message(error)}"
                            ) from None
        return reply

    def wrap(self, data: bytes) -> bytes:
        try:
            return self._context.wrap(data, False).message
        except self._gssapi.exceptions.GSSError as error:
            raise SaslError(f"GSSAPI: cannot wrap: {_message(error)}") from None

    def unwrap(self, data: bytes) -> bytes:
        try:
            return self._context.unwrap(data).message
        except self._gssapi.exceptions.GSSError as error:
            raise SaslError(f"GSSAPI: cannot unwrap the client's token: {_message(error)}"
                            ) from None


def login(principal: str, keytab: str | None, remove_host: bool = False,
          remove_realm: bool = False) -> GssapiLogin:
    """Acquire the acceptor credentials of `principal` once, at start-up, so that a missing or
    unreadable keytab, or one without the principal's key, is a configuration error with the
    library's reason (GssUnavailable) rather than a failure at the first client."""
    gssapi = _import_gssapi()
    store = {"keytab": keytab} if keytab else None
    try:
        name = gssapi.Name(principal, gssapi.NameType.kerberos_principal)
        creds = gssapi.Credentials(name=name, usage="accept", store=store)
        # the default realm, as the library sees it: a bare name canonicalized gets it appended
        probe = gssapi.Name("fastzk", gssapi.NameType.user).canonicalize(
            gssapi.MechType.kerberos)
    except gssapi.exceptions.GSSError as error:
        where = keytab or "the default keytab (KRB5_KTNAME)"
        raise GssUnavailable(f"no usable Kerberos key for {principal} in {where}: "
                             f"{_message(error)}") from None
    default_realm = str(probe).rpartition("@")[2]
    return GssapiLogin(new_acceptor=lambda: GssAcceptor(gssapi, creds),
                       names=KerberosNames(default_realm, remove_host, remove_realm))
