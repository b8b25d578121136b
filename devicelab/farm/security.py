"""TLS for the Dask comm: one certificate authority, one certificate and key per process (README: "Device farm")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devicelab.errors import DevicelabError


def tls_options(ca: str | None, cert: str | None, key: str | None) -> tuple[str, str, str] | None:
    """The three TLS files, all given or none (one clear line otherwise); each must be a readable file."""
    given = {"--tls-ca": ca, "--tls-cert": cert, "--tls-key": key}
    if not any(given.values()):
        return None
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise DevicelabError(f"{', '.join(missing)}: TLS needs --tls-ca, --tls-cert and --tls-key together")
    for name, value in given.items():
        if not Path(str(value)).expanduser().is_file():
            raise DevicelabError(f"{name}: {value} is not a file")
    return str(Path(str(ca)).expanduser()), str(Path(str(cert)).expanduser()), str(Path(str(key)).expanduser())


def security(tls: tuple[str, str, str] | None) -> Any:
    """A distributed Security: TLS required on every connection (scheduler, workers, clients) when `tls` is given,
    each side presenting its certificate signed by the CA (mutual TLS: a client without one cannot submit)."""
    from distributed.security import Security

    if tls is None:
        return Security()
    ca, cert, key = tls
    return Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, tls_scheduler_cert=cert,
                    tls_scheduler_key=key, tls_worker_cert=cert, tls_worker_key=key, require_encryption=True)
