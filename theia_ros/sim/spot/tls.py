"""A throw-away self-signed TLS certificate for the stand-in robot's gRPC server.

bosdyn-client only speaks TLS and checks the server certificate against the robot CA it was
given (``create_standard_sdk(..., cert_resource_glob=...)``) and the authority names it dials
(``api.spot.robot``, ``auth.spot.robot``, ``id.spot.robot``). A self-signed certificate that
names those authorities, passed to the SDK as its CA, lets the real secure-channel code run.
Generated with the ``openssl`` command line (Debian's ``openssl`` package) so the tests need
no extra Python dependency; the key never leaves the temporary directory.

Imitates the robot's TLS identity as bosdyn-client checks it (``bosdyn/client/channel.py``,
``bosdyn/client/resources/robot.pem``: a CA-signed certificate for the robot's authority).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

AUTHORITIES = ("api.spot.robot", "auth.spot.robot", "id.spot.robot")


@dataclass(frozen=True)
class TlsFiles:
    cert_path: Path  # PEM certificate; also the CA the client must trust
    key_path: Path  # PEM private key (0600)

    def server_pair(self) -> tuple[bytes, bytes]:
        """``(private_key, certificate_chain)`` as ``grpc.ssl_server_credentials`` wants it."""
        return self.key_path.read_bytes(), self.cert_path.read_bytes()


def make_self_signed(directory: Path) -> TlsFiles:
    """Write a 1-day EC P-256 certificate for the Spot authority names into ``directory``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the Spot stand-in needs the 'openssl' command (apt install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "standin_robot.pem", directory / "standin_robot.key"
    san = ",".join(f"DNS:{name}" for name in AUTHORITIES)
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", f"/CN={AUTHORITIES[0]}",
         "-addext", f"subjectAltName={san}",
         "-keyout", str(key_path), "-out", str(cert_path)],
        check=True, capture_output=True,
    )
    key_path.chmod(0o600)
    return TlsFiles(cert_path=cert_path, key_path=key_path)
