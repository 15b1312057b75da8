"""Locust spike tests against a running onsale (`make up` first).

    .venv/bin/locust -f locust/locustfile.py --host http://127.0.0.1:8000

The REST hold and order endpoints arrive with the API issue; until then this
exercises the operations endpoints a load balancer polls during an on-sale.
"""

from __future__ import annotations

from locust import FastHttpUser, between, task


class LoadBalancerProbe(FastHttpUser):
    wait_time = between(0.05, 0.2)

    @task(5)
    def healthz(self) -> None:
        self.client.get("/healthz")

    @task(1)
    def readyz(self) -> None:
        with self.client.get("/readyz", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"not ready: {response.text[:200]}")
