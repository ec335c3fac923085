"""Transport security: a process's certificate, and the CA that makes TLS mutual.

A process of the mesh (or a partner machine) serves TLS with its certificate
and key. With a CA as well, TLS is mutual: its server accepts only clients
presenting a certificate that CA signed, and every call it makes to the other
services and to machines presents its own certificate as the client's and
checks the server's against that CA. One certificate per process therefore
serves both ends: give it both the serverAuth and clientAuth usages (or no
extended usage). Without a CA, servers it calls are checked against the
system's roots. The services hosted in one process call each other at
127.0.0.1 trusting exactly the process's own certificate, which must
therefore name IP 127.0.0.1 too.

Plaintext is the default only on loopback: serving any other address in
plaintext must be asked for (`insecure`), since API keys would cross the
network in clear.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from brewmesh.startup import Setting, StartError

LOOPBACK_NAMES = frozenset({"localhost"})
PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


@dataclass(frozen=True)
class Tls:
    """PEM bytes: the certificate chain and key a process serves with, and the CA for mTLS."""

    certificate_chain: bytes
    private_key: bytes
    ca: bytes | None = None

    @property
    def mutual(self) -> bool:
        """Whether clients must present a certificate signed by `ca`."""
        return self.ca is not None

    @classmethod
    def load(cls, cert: str | Path, key: str | Path, ca: str | Path | None = None) -> Tls:
        """Read and check the PEM files; a StartError names the file at fault."""
        cert, key, ca = Path(cert), Path(key), Path(ca) if ca else None
        chain = _read(Setting.TLS_CERT, cert, "certificate")
        private_key = _read(Setting.TLS_KEY, key, "private key")
        authority = _read(Setting.TLS_CA, ca, "CA certificate") if ca else None
        _check_certificates(Setting.TLS_CERT, cert, chain)
        _check_key(cert, key)
        if ca and authority is not None:
            _check_certificates(Setting.TLS_CA, ca, authority)
        return cls(chain, private_key, authority)

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.ca,
            require_client_auth=self.mutual,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """For calls this process makes: with a CA, mutual (it presents its certificate)."""
        if self.ca is None:
            return grpc.ssl_channel_credentials()
        return grpc.ssl_channel_credentials(self.ca, self.private_key, self.certificate_chain)

    def own_credentials(self) -> grpc.ChannelCredentials:
        """For calls a process makes to itself (the embedded mesh's runner to its registry):
        trusting exactly its own certificate, whoever signed it, and presenting it."""
        return grpc.ssl_channel_credentials(self.certificate_chain, self.private_key, self.certificate_chain)


def load_tls(cert: Path | None, key: Path | None, ca: Path | None) -> Tls | None:
    """The TLS the settings ask for (read and checked now), or None for plaintext."""
    if cert is None and key is None:
        if ca:
            raise StartError(
                Setting.TLS_CA, "mutual TLS needs this process's own --tls-cert and --tls-key too"
            )
        return None
    if cert is None:
        raise StartError(Setting.TLS_CERT, "--tls-key needs the certificate it is the key of")
    if key is None:
        raise StartError(Setting.TLS_KEY, "--tls-cert needs its private key")
    return Tls.load(cert, key, ca)


def peer_credentials(tls: Tls | None, hosted_here: bool = False) -> grpc.ChannelCredentials | None:
    """How a process calls a service of its mesh: TLS if it serves TLS, else plaintext; a service
    `hosted_here` is called with `own_credentials`.

    Every process of one mesh is started with the same TLS settings.
    """
    if tls is None:
        return None
    return tls.own_credentials() if hosted_here else tls.channel_credentials()


def machine_credentials(tls: Tls | None) -> grpc.ChannelCredentials:
    """How the mesh calls a machine declared with `tls: true`: as its peers (mTLS with the
    mesh's CA, when it has one), else checked against the system's roots."""
    return tls.channel_credentials() if tls else grpc.ssl_channel_credentials()


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 perhaps in brackets) is this machine only."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_plaintext(host: str, tls: Tls | None, insecure: bool) -> None:
    """Refuse to serve `host` in plaintext beyond loopback unless `insecure` says so."""
    if tls is None and not insecure and not is_loopback(host):
        raise StartError(
            Setting.HOST,
            f"serving {host} in plaintext would send API keys across the network in clear:"
            " serve TLS (--tls-cert and --tls-key) or accept plaintext with --insecure",
        )


def _read(setting: Setting, path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise StartError(setting, f"cannot read the {what} {path}: {error.strerror or error}") from error


def _check_certificates(setting: Setting, path: Path, pem: bytes) -> None:
    problem = "" if PEM_CERTIFICATE in pem else "no '-----BEGIN CERTIFICATE-----' block"
    if not problem:
        try:
            ssl.create_default_context(cadata=pem.decode("ascii"))
        except (UnicodeDecodeError, ssl.SSLError, ValueError) as error:
            problem = "a certificate block does not decode"
            problem += f": {error.reason.lower()}" if isinstance(error, ssl.SSLError) and error.reason else ""
    if problem:
        raise StartError(setting, f"{path} is not a PEM certificate file ({problem})")


def _check_key(cert: Path, key: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # No password: grpc cannot use an encrypted key, so one must not prompt here either.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except (ssl.SSLError, ValueError) as error:
        mismatch = isinstance(error, ssl.SSLError) and error.reason == "KEY_VALUES_MISMATCH"
        problem = (
            f"is not the key of the certificate in {cert}"
            if mismatch
            else ("is not an unencrypted PEM private key")
        )
        raise StartError(Setting.TLS_KEY, f"{key} {problem}") from error
