"""Keep the staging cache under its size limit while a Master runs.

The cache is shared by every trial and, on a facility, every user; without a limit it only
grows. The janitor applies `TRAINYARD_STAGING_CACHE_MAX_GB` now and then from a daemon thread
of the Master: eviction (`data.staged.cache.evict`) skips whatever a trial is reading, so it
needs no coordination with the runner.
"""

from __future__ import annotations

import logging
import threading

from trainyard.data.staged.cache import evict
from trainyard.settings import Settings

logger = logging.getLogger(__name__)


class StagingCacheJanitor:
    """Evicts least recently used staged data past the limit, every `staging_cache_check_s`."""

    def __init__(self, settings: Settings) -> None:
        if settings.staging_cache_max_gb is None:
            raise ValueError("the janitor needs staging_cache_max_gb")
        self._cache_root = settings.staging_dir()
        self._max_bytes = int(settings.staging_cache_max_gb * 1e9)
        self._interval_s = settings.staging_cache_check_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="staging-janitor", daemon=True)

    @classmethod
    def start_if_limited(cls, settings: Settings) -> StagingCacheJanitor | None:
        """A running janitor when the settings give the cache a limit, else None."""
        if settings.staging_cache_max_gb is None:
            return None
        janitor = cls(settings)
        janitor._thread.start()
        return janitor

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                evict(self._cache_root, max_bytes=self._max_bytes)
            except OSError as error:  # a full or vanished disk must not end the Master
                logger.warning("could not clean the staging cache %s: %s", self._cache_root, error)
            self._stop.wait(self._interval_s)
