"""Certificates made at test time (a CA that issues server and client certificates: valid,
expired, for other hosts), for the client TLS and quorum TLS tests."""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fastzk.nemesis.servers import LOOPBACK

NOW = datetime.datetime.now(datetime.UTC)


class Issuer:
    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256()))

    def issue(self, subject: str | x509.Name, hosts: tuple[str, ...] = ("localhost",),
              expired: bool = False) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        names = [x509.DNSName(h) for h in hosts]
        if hosts == ("localhost",):
            names.append(x509.IPAddress(ipaddress.ip_address(LOOPBACK)))
        end = NOW - datetime.timedelta(days=1) if expired else NOW + datetime.timedelta(days=30)
        cert = (
            x509.CertificateBuilder().subject_name(
                subject if isinstance(subject, x509.Name) else x509.Name.from_rfc4514_string(
                    subject))
            .issuer_name(self.name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=2)).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(self.key, hashes.SHA256()))
        return key, cert


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
