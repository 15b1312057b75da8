"""onsale's engine: per-event Ray actors that hold and sell seats through Redis Lua.

Callers use :class:`engine.client.EngineClient`; nothing outside this package
calls an actor or a script directly.
"""
