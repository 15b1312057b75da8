"""Joining or starting the Ray cluster the event actors live in."""

from __future__ import annotations

import logging
import os

import ray

NAMESPACE = "onsale"
DEFAULT_OBJECT_STORE_BYTES = 128 * 1024 * 1024

log = logging.getLogger(__name__)


def connect(address: str | None = None, *, object_store_bytes: int | None = None) -> str:
    """Connects this process to Ray and returns the cluster's address.

    With no address (and no ``RAY_ADDRESS``) a local Ray is started for this
    process, with a small object store and no dashboard: the actors pass small
    lists of operations, never large objects.
    """
    if ray.is_initialized():
        return str(ray.get_runtime_context().gcs_address)
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    else:
        ray.init(
            namespace=NAMESPACE,
            include_dashboard=False,
            object_store_memory=object_store_bytes or DEFAULT_OBJECT_STORE_BYTES,
            log_to_driver=False,
            configure_logging=False,
        )
    gcs_address = str(ray.get_runtime_context().gcs_address)
    log.info("ray connected at %s", gcs_address)
    return gcs_address


def disconnect() -> None:
    if ray.is_initialized():
        ray.shutdown()


def is_ready() -> bool:
    """Connected, and the cluster answers with its resources (a GCS round trip)."""
    return ray.is_initialized() and bool(ray.cluster_resources())
