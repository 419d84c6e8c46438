"""Reads the JAAS login configuration ZooKeeper's server takes its SASL users from.

A JAAS file is a list of sections `Name { module flag key="value" ...; ... };` with Java-style
comments. ZooKeeper's server reads the section named by `zookeeper.sasl.serverconfig`
(`Server`). A Krb5LoginModule entry there makes it a Kerberos (SASL GSSAPI) server with that
entry's principal and keytab (`server_kerberos`); otherwise every `user_NAME="password"` option
of its entries is a DIGEST-MD5 user (`server_users`). Pure: the caller reads the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r'\s+|//[^\n]*|/\*.*?\*/|#[^\n]*|"((?:[^"\\]|\\.)*)"|([{};=])|([^\s{};="]+)',
                    re.DOTALL)


class JaasError(ValueError):
    pass


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, value) pairs: kind is "str" (a quoted string), "punct" or "word"."""
    result: list[tuple[str, str]] = []
    index = 0
    while index < len(text):
        match = _TOKEN.match(text, index)
        if match is None:
            raise JaasError(f"unterminated string or comment at offset {index}")
        quoted, punct, word = match.groups()
        if quoted is not None:
            result.append(("str", re.sub(r"\\(.)", r"\1", quoted)))
        elif punct is not None:
            result.append(("punct", punct))
        elif word is not None:
            result.append(("word", word))
        index = match.end()
    return result


def parse(text: str) -> dict[str, list[tuple[str, dict[str, str]]]]:
    """Section name -> its entries (login module class, options), in file order."""
    tokens = _tokens(text)
    sections: dict[str, list[tuple[str, dict[str, str]]]] = {}
    pos = 0

    def take(kind: str, value: str | None = None) -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise JaasError(f"unexpected end of file (expected {value or kind})")
        got_kind, got = tokens[pos]
        if got_kind != kind or (value is not None and got != value):
            raise JaasError(f"expected {value or kind}, found {got!r}")
        pos += 1
        return got

    while pos < len(tokens):
        name = take("word")
        take("punct", "{")
        entries: list[tuple[str, dict[str, str]]] = []
        while tokens[pos:pos + 1] != [("punct", "}")]:
            module = take("word")
            flag = take("word")
            if flag.lower() not in ("required", "requisite", "sufficient", "optional"):
                raise JaasError(f"{name}: {module}: control flag {flag!r}")
            options: dict[str, str] = {}
            while tokens[pos:pos + 1] != [("punct", ";")]:
                key = take("word")
                take("punct", "=")
                if pos < len(tokens) and tokens[pos][0] in ("str", "word"):
                    options[key] = tokens[pos][1]
                    pos += 1
                else:
                    raise JaasError(f"{name}: {module}: option {key} has no value")
            take("punct", ";")
            entries.append((module, options))
        take("punct", "}")
        if pos < len(tokens) and tokens[pos] == ("punct", ";"):
            pos += 1
        if name in sections:
            raise JaasError(f"section {name} is given twice")
        sections[name] = entries
    return sections


def _section(text: str, section: str) -> list[tuple[str, dict[str, str]]]:
    sections = parse(text)
    if section not in sections:
        raise JaasError(f"no {section} section (ZooKeeper's server takes its SASL login "
                        f"from it)")
    return sections[section]


def server_users(text: str, section: str = "Server") -> tuple[tuple[str, str], ...]:
    """The `user_NAME="password"` options of `section`, sorted by name."""
    users = {key[len("user_"):]: value
             for _, options in _section(text, section) for key, value in options.items()
             if key.startswith("user_")}
    return tuple(sorted(users.items()))


def digest_login(text: str, section: str) -> tuple[str, str]:
    """The `username` and `password` options a DIGEST login (ZooKeeper's QuorumLearner, a
    client's Client section) gives in `section`."""
    for module, options in _section(text, section):
        if module.endswith("Krb5LoginModule"):
            raise JaasError(f"{section}: Kerberos between members is not supported; use "
                            "DigestLoginModule with username and password")
        if "username" in options and "password" in options:
            return options["username"], options["password"]
    raise JaasError(f"{section}: no entry with both username and password")


@dataclass(frozen=True)
class KerberosLogin:
    """The Krb5LoginModule entry of the server's section: whose keys, from which keytab (None:
    KRB5_KTNAME or the Kerberos library's default keytab)."""

    principal: str
    keytab: str | None


def server_kerberos(text: str, section: str = "Server") -> KerberosLogin | None:
    """The Kerberos login of `section` (None when it has no Krb5LoginModule entry). As the
    JDK's Krb5LoginModule for a server, it needs `principal` and `useKeyTab=true`: fastzk has
    no password prompt or ticket cache to fall back on, so anything else is an error."""
    entries = [(module, options) for module, options in _section(text, section)
               if module.rpartition(".")[2] == "Krb5LoginModule"]
    if not entries:
        return None
    if len(entries) > 1:
        raise JaasError(f"{section}: {len(entries)} Krb5LoginModule entries (one server "
                        "principal, please)")
    module, options = entries[0]
    principal = options.get("principal", "").strip()
    if not principal:
        raise JaasError(f'{section}: {module}: no principal (e.g. principal='
                        f'"zookeeper/host.example.com@EXAMPLE.COM")')
    if options.get("useKeyTab", "false").lower() != "true":
        raise JaasError(f"{section}: {module}: a server needs its keys from a keytab: "
                        "useKeyTab=true (and keyTab=\"/path/to/zookeeper.keytab\")")
    return KerberosLogin(principal, options.get("keyTab") or None)
