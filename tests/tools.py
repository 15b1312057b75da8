"""Tools some tests drive that Python does not bring: Debian's Chromium,
docker-compose and wrk. `make test` installs them (apt-get, as root); where
one is still missing the test that needs it skips and says how to install
it, except under CI (``CI=true``), where a missing tool is a failure: a CI run
that skips what it cannot see proves nothing about it."""

from __future__ import annotations

import os
import shutil

import pytest

DEBIAN_PACKAGES = {"chromium": "chromium", "docker-compose": "docker-compose", "wrk": "wrk"}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def need_tool(command: str) -> str:
    """The path of ``command``; skips the test (fails it under CI) when absent."""
    found = shutil.which(command)
    if found:
        return found
    package = DEBIAN_PACKAGES.get(command, command)
    message = (
        f"{command} is not installed: `make test` installs it as root, or run "
        f"`sudo apt-get install {package}`"
    )
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing tool fails rather than skips)")
    pytest.skip(message)
