"""Import ultralytics so that it never reaches for the network.

ultralytics 8.4 decides at *import* time whether it is online (``ultralytics.utils.ONLINE``, a DNS
lookup of one.one.one.one unless ``YOLO_OFFLINE`` is set), and uses that to gate its update check,
its usage analytics and Sentry. It also keeps a settings file in ``YOLO_CONFIG_DIR`` (default
``~/.config/Ultralytics``, where it would download ``Arial.ttf`` for plotting) and pip-installs
missing requirements unless ``YOLO_AUTOINSTALL`` is off. So before the first import we set
``YOLO_OFFLINE=1``, ``YOLO_AUTOINSTALL=0`` and ``YOLO_CONFIG_DIR=<regrpo cache>/ultralytics`` (only
where the user has not set them), and afterwards turn ``sync`` (analytics) off in its settings.
Weights are never fetched by name: callers check that a checkpoint *file* exists before YOLO sees it.

If the user imported ultralytics before regrpo, its import-time decisions are already made; we
still turn settings sync off, which is what gates analytics. ultralytics also patches
``PIL.Image.open`` process-wide (to pip-install a HEIF plugin for files PIL cannot identify); we
restore PIL's own ``open``, so a bad image stays a clean error and nothing is installed at run time.
"""

from __future__ import annotations

import functools
import os
import sys
from types import ModuleType

from regrpo.paths import default_cache_dir

__all__ = ["import_ultralytics"]


@functools.cache
def import_ultralytics() -> ModuleType:
    """The ``ultralytics`` module, imported once with its network features off."""
    if "ultralytics" not in sys.modules:
        config_dir = default_cache_dir() / "ultralytics"
        config_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    import ultralytics
    from PIL import Image
    from ultralytics.utils import SETTINGS, patches

    if Image.open is getattr(patches, "image_open", None):
        # ultralytics replaces PIL.Image.open with a wrapper that, on a file PIL cannot identify,
        # pip-installs a HEIF plugin and retries: a network attempt, and a ModuleNotFoundError where
        # the caller expects PIL's UnidentifiedImageError. We never read HEIF: put PIL's own back.
        Image.open = patches._image_open

    if SETTINGS.get("sync", False):
        SETTINGS.update(sync=False)
    return ultralytics
