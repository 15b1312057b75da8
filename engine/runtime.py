"""Joining or starting the Ray cluster the event actors live in."""

from __future__ import annotations

import logging
import os

NAMESPACE = "onsale"
DEFAULT_OBJECT_STORE_BYTES = 128 * 1024 * 1024
# Ray reads this when it is first imported: with it off, a Ray that onsale
# starts on this machine binds to loopback instead of advertising the
# machine's outward address.
_LOOPBACK_FLAG = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

log = logging.getLogger(__name__)


def keep_local_ray_on_loopback() -> None:
    """For entry points (the ``onsale`` command, the test suite), before
    anything imports ``ray``: a local Ray started by this process, and the
    workers that inherit its environment, listen on loopback only. A cluster
    (``RAY_ADDRESS``) is left alone."""
    if not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault(_LOOPBACK_FLAG, "0")


def connect(address: str | None = None, *, object_store_bytes: int | None = None) -> str:
    """Connects this process to Ray and returns the cluster's address.

    With no address (and no ``RAY_ADDRESS``) a local Ray of this process's own
    is started (``address="local"``: never a Ray someone else started on the
    machine), with a small object store and no dashboard: the actors pass
    small lists of operations, never large objects. Its workers run at the
    API's priority (Ray nices them to 15 by default): an event's actor is on
    every hold's, checkout's and payment's path, and on a busy machine a
    niced actor waits behind the API it serves.
    """
    import ray

    if ray.is_initialized():
        return str(ray.get_runtime_context().gcs_address)
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    else:
        ray.init(
            address="local",
            namespace=NAMESPACE,
            include_dashboard=False,
            object_store_memory=object_store_bytes or DEFAULT_OBJECT_STORE_BYTES,
            log_to_driver=False,
            configure_logging=False,
            _system_config={"worker_niceness": 0},
        )
    gcs_address = str(ray.get_runtime_context().gcs_address)
    log.info("ray connected at %s", gcs_address)
    return gcs_address


def disconnect() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def is_ready() -> bool:
    """Connected, and the cluster answers with its resources (a GCS round trip)."""
    import ray

    return ray.is_initialized() and bool(ray.cluster_resources())
