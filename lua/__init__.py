"""The Redis Lua scripts of onsale, shipped as package data (see engine/scripts.py)."""
