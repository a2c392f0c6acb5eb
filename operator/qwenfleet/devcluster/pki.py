"""Certificates for the local control plane: one CA, the API server's serving cert, an admin client cert and
the service-account signing key (cryptography, no openssl)."""

from __future__ import annotations

import base64
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 365


def _name(common: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def write_pki(directory: Path) -> None:
    """Write ca.crt, apiserver.crt/key, admin.crt/key, sa.key/sa.pub into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("qwenfleet-dev-ca")
    ca = _cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default.svc"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    server = _cert(_name("kube-apiserver"), server_key, ca_name, ca_key,
                   usage=ExtendedKeyUsageOID.SERVER_AUTH, sans=sans)  # fmt: skip
    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin = _cert(_name("qwenfleet-dev-admin", "system:masters"), admin_key, ca_name, ca_key,
                  usage=ExtendedKeyUsageOID.CLIENT_AUTH)  # fmt: skip
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = serialization.Encoding.PEM
    files = {
        "ca.crt": ca.public_bytes(pem),
        "ca.key": _pem_key(ca_key),
        "apiserver.crt": server.public_bytes(pem),
        "apiserver.key": _pem_key(server_key),
        "admin.crt": admin.public_bytes(pem),
        "admin.key": _pem_key(admin_key),
        "sa.key": _pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo),
    }
    for name, data in files.items():
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o600)


def kubeconfig(directory: Path, server: str) -> str:
    """An admin kubeconfig for `server` with the certificates of `directory` embedded."""

    def b64(name: str) -> str:
        return base64.b64encode((directory / name).read_bytes()).decode()

    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: qwenfleet-dev\n  cluster:\n    server: {server}\n"
        f"    certificate-authority-data: {b64('ca.crt')}\n"
        f"users:\n- name: qwenfleet-dev-admin\n  user:\n    client-certificate-data: {b64('admin.crt')}\n"
        f"    client-key-data: {b64('admin.key')}\n"
        "contexts:\n- name: qwenfleet-dev\n  context:\n    cluster: qwenfleet-dev\n    user: qwenfleet-dev-admin\n"
        "current-context: qwenfleet-dev\n"
    )
