"""A bounded registry of loaded backbones: one slot per (spec, device), least recently used evicted.

Each slot loads its backbone in a background thread (so a caller never waits for one it does not
need) and owns the lock every use of that backbone holds (torch modules are not re-entrant across
threads). A long-running server that sees many specs keeps at most ``max_entries`` in memory.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from explorer.core.errors import ExplorerError


@dataclass
class BackboneSlot:
    """A backbone being loaded (in a thread) or loaded, with the lock every use of it holds.

    ``error`` is one sentence; for an unexpected failure ``details`` keeps the traceback."""

    spec: str
    device: str | None
    loader: Callable[..., Any]
    on_loaded: Callable[["BackboneSlot"], None] | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)
    backbone: Any = None
    error: str | None = None
    details: str | None = None
    seconds: float | None = None
    _done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "BackboneSlot":
        """Start loading in a daemon thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._load, name=f"load-backbone-{self.spec}", daemon=True)
            self._thread.start()
        return self

    def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            self.backbone = self.loader(self.spec, device=self.device)
        except ExplorerError as exc:
            self.error = str(exc)
        except Exception as exc:  # a bug, not the user's fault: keep the traceback for the details view
            self.details = traceback.format_exc()
            self.error = f"Loading the backbone {self.spec} failed unexpectedly ({type(exc).__name__}: {exc})."
        finally:
            self.seconds = time.perf_counter() - t0
            if self.on_loaded is not None:
                self.on_loaded(self)
            self._done.set()

    @property
    def pending(self) -> bool:
        return not self._done.is_set()

    def wait(self, timeout: float | None = None):
        """The backbone (blocking until loaded); ExplorerError when it cannot be loaded."""
        self.start()
        if not self._done.wait(timeout):
            raise ExplorerError(f"The backbone {self.spec} is still loading; try again in a moment.")
        if self.error:
            raise ExplorerError(self.error)
        return self.backbone


class BackboneRegistry:
    """Slots by (spec, device), at most ``max_entries`` kept (least recently used evicted); thread-safe."""

    def __init__(self, max_entries: int = 3, loader: Callable[..., Any] | None = None,
                 on_loaded: Callable[[BackboneSlot], None] | None = None,
                 on_evict: Callable[[BackboneSlot], None] | None = None):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if loader is None:
            from explorer.backbones.load import load_backbone as loader
        self.max_entries = max_entries
        self.loader, self.on_loaded, self.on_evict = loader, on_loaded, on_evict
        self._slots: OrderedDict[tuple[str, str | None], BackboneSlot] = OrderedDict()
        self._lock = threading.Lock()

    def slot(self, spec: str, device: str | None = None) -> BackboneSlot:
        """The slot of ``spec`` on ``device`` (loading starts in the background); marks it most recent."""
        key = (spec, device)
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = BackboneSlot(spec, device, self.loader, self.on_loaded)
                self._slots[key] = slot
            self._slots.move_to_end(key)
            slot.start()  # under the lock: two callers never start two loads of one slot
            evicted = [self._slots.popitem(last=False)[1] for _ in range(len(self._slots) - self.max_entries)]
        for old in evicted:
            if self.on_evict is not None:
                self.on_evict(old)
        return slot

    def get(self, spec: str, device: str | None = None, timeout: float | None = None):
        """The loaded backbone of ``spec`` (waits for it)."""
        return self.slot(spec, device).wait(timeout)

    def slots(self) -> list[BackboneSlot]:
        """The slots kept now, most recently used last."""
        with self._lock:
            return list(self._slots.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._slots)
