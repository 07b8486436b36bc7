"""Certificates and keys of the local control plane, made once with the openssl command-line tool."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# client identities: file stem -> (common name, organisation)
CLIENTS = {
    "admin": ("paceline-admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", ""),
    "scheduler": ("system:kube-scheduler", ""),
    "kwok": ("kwok-controller", "system:masters"),
    "runtime": ("paceline-process-runtime", "system:masters"),
    "karpenter": ("karpenter", "system:masters"),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
}


@dataclass(frozen=True, kw_only=True)
class Pki:
    """Paths of the cluster's certificates and keys."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        """Cluster CA certificate."""
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """Cluster CA key."""
        return self.dir / "ca.key"

    @property
    def sa_key(self) -> Path:
        """ServiceAccount token signing key."""
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        """ServiceAccount token verification key."""
        return self.dir / "sa.pub"

    def cert(self, stem: str) -> Path:
        """Certificate of a server or client identity."""
        return self.dir / f"{stem}.crt"

    def key(self, stem: str) -> Path:
        """Private key of a server or client identity."""
        return self.dir / f"{stem}.key"


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError(
            "openssl is needed to make the local cluster's certificates: apt-get install openssl"
        )
    proc = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def _signed(pki: Pki, stem: str, subject: str, extensions: str) -> None:
    ext = pki.dir / f"{stem}.ext"
    ext.write_text(extensions)
    _openssl("genrsa", "-out", pki.key(stem).name, "2048", cwd=pki.dir)
    _openssl("req", "-new", "-key", pki.key(stem).name, "-subj", subject, "-out", f"{stem}.csr", cwd=pki.dir)
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{stem}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3650",
        "-sha256",
        "-extfile",
        ext.name,
        "-out",
        pki.cert(stem).name,
        cwd=pki.dir,
    )
    (pki.dir / f"{stem}.csr").unlink()
    ext.unlink()


def ensure_pki(directory: Path) -> Pki:
    """Create the CA, the API server's serving certificate (loopback only) and client certificates."""
    pki = Pki(dir=directory)
    if pki.cert("apiserver").exists() and all(pki.cert(s).exists() for s in CLIENTS):
        return pki
    if pki.cert("apiserver").exists() and pki.ca_key.exists() and pki.sa_pub.exists():
        _sign_clients(pki, [s for s in CLIENTS if not pki.cert(s).exists()])  # a client added since
        return pki
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("genrsa", "-out", "ca.key", "2048", cwd=directory)
    _openssl(
        "req",
        "-x509",
        "-new",
        "-nodes",
        "-key",
        "ca.key",
        "-sha256",
        "-days",
        "3650",
        "-subj",
        "/CN=paceline-local-ca",
        "-out",
        "ca.crt",
        cwd=directory,
    )
    server_ext = (
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
    )
    _signed(pki, "apiserver", "/CN=kube-apiserver", server_ext)
    _sign_clients(pki, list(CLIENTS))
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=directory)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    return pki


def ensure_serving(pki: Pki, stem: str, common_name: str) -> tuple[Path, Path]:
    """A loopback serving certificate (e.g. kwok's kubelet-like server), made once; (cert, key)."""
    if not pki.cert(stem).exists():
        ext = (
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        )
        _signed(pki, stem, f"/CN={common_name}", ext)
    return pki.cert(stem), pki.key(stem)


def _sign_clients(pki: Pki, stems: list[str]) -> None:
    client_ext = (
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
    )
    for stem in stems:
        cn, org = CLIENTS[stem]
        subject = f"/CN={cn}" + (f"/O={org}" if org else "")
        _signed(pki, stem, subject, client_ext)
