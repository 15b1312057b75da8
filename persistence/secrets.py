"""Secrets the embedded default generates into the data directory.

The JWT key, the ticket-signing key and localstripe's webhook secret are made
once, on first use, by whichever process gets there first, and read by every
other (API workers, the writer): kept in the data directory with mode 0600,
never in the repository. Production sets them in the environment instead.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def load_or_create_secret(
    data_dir: Path, name: str = "jwt-secret", make: Callable[[], str] | None = None
) -> str:
    """The secret kept in ``data_dir/name``: generated once (by ``make``, a
    random token by default), shared by every worker."""
    path = data_dir / name
    data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = data_dir / f".{name}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(make() if make else secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)  # atomic: the first worker's secret wins, whole
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()
