"""Run an iterator one step ahead in a background thread (decode the next images while a batch runs)."""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


def prefetched(items: Iterable[T], ahead: int = 1) -> Iterator[T]:
    """The items of ``items``, produced in a daemon thread up to ``ahead`` items before they are
    asked for; an exception in the producer is raised here, at its place in the sequence. Closing
    the returned generator early stops the producer after its current item."""
    box: queue.Queue = queue.Queue(maxsize=max(1, ahead))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(box, (item, None), stop):
                    return
            _put(box, (_DONE, None), stop)
        except BaseException as exc:  # handed to the consumer, raised there
            _put(box, (_DONE, exc), stop)

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = box.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()


def _put(box: queue.Queue, entry, stop: threading.Event) -> bool:
    """Put ``entry`` unless the consumer has gone (False then)."""
    while not stop.is_set():
        try:
            box.put(entry, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
