"""Produce items on a background thread, a bounded number ahead of the consumer.

The producer blocks once ``depth`` items wait in the queue, so memory stays bounded however
slow the consumer is; an exception in the producer reaches the consumer at the item where it
happened; ``close()`` stops the thread even while it waits on a full queue.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

_POLL_S = 0.05
"""How often a producer blocked on a full queue checks whether it should stop."""


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_END = object()


class Prefetcher(Generic[T]):
    """Iterate over ``(index, produce(index))`` for ``indices``, produced on a daemon thread."""

    def __init__(
        self, produce: Callable[[int], T], indices: Iterable[int], *, depth: int, name: str
    ) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be at least 1, got {depth}")
        self._produce = produce
        self._indices = indices
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[tuple[int, T]]:
        """Yield items in order; re-raise the producer's exception where it happened."""
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]

    def close(self) -> None:
        """Stop the producer and wait for it; the item it is producing is finished first."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            for index in self._indices:
                if self._stop.is_set() or not self._put((index, self._produce(index))):
                    return
            self._put(_END)
        except BaseException as error:
            self._put(_Failed(error))

    def _put(self, item: object) -> bool:
        """Queue ``item`` unless asked to stop first; returns whether it was queued."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False
