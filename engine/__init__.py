"""onsale's engine: per-event Ray actors that hold and sell seats through Redis Lua.

Callers use :class:`engine.client.EngineClient`; nothing outside this package
calls an actor or a script directly.
"""

import os

# A local Ray started by onsale binds to loopback (its GCS would otherwise
# advertise the machine's outward address). Read by Ray at import time, and
# inherited by the worker processes it starts; a cluster (RAY_ADDRESS) is
# left alone.
if not os.environ.get("RAY_ADDRESS"):
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
