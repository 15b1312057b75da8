"""onsale's test suite. Its entry point, like the ``onsale`` command's ``main``:
before any test module imports Ray, a local Ray is kept on loopback."""

from engine.runtime import keep_local_ray_on_loopback

keep_local_ray_on_loopback()
