"""A bounded pool of loaded backbones: one slot per (spec, device), least recently used evicted.

Each slot loads its backbone in a background thread (so a caller never waits for one it does not
need) and owns the lock every use of that backbone holds: callers get a :class:`BackboneHandle`,
whose :meth:`~BackboneHandle.use` holds it (one request at a time per backbone: page requests do
not oversubscribe the CPU, nor see a half-done state change such as an ONNX trace). Everything built
on a backbone that holds its modules (prompt models: their text encoder *is* the backbone's text
tower) lives in the slot (:meth:`BackboneHandle.cached`) and goes with it on eviction, so a
long-running server that sees many specs keeps at most ``max_entries`` backbones in memory.
A slot that is :meth:`~BackboneRegistry.borrow`-ed (a training job) is not evicted until returned.
A slot asked for ``image_only`` (Predict: the checkpoint's stored prototypes need only the image
tower) loads the image tower alone, unless the whole backbone is already kept (or loading); a
whole backbone of the same spec and device replaces such a slot.
A load that failed transiently (:class:`~explorer.core.errors.TransientError`: out of memory, the hub
unreachable) is retried by the next request.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from explorer.core.errors import ExplorerError, TransientError, is_out_of_memory

MAX_RESOURCES = 16  # objects built on one backbone (prompt models ...) kept per slot, least recently used dropped


@dataclass
class BackboneSlot:
    """A backbone being loaded (in a thread) or loaded, with the lock every use of it holds.

    ``error`` is one sentence (``transient``: it may go away, the next request retries); for an
    unexpected failure ``details`` keeps the traceback."""

    spec: str
    device: str | None
    loader: Callable[..., Any]
    on_loaded: Callable[["BackboneSlot"], None] | None = None
    image_only: bool = False
    gate: Any = field(default_factory=contextlib.nullcontext, repr=False)  # held while loading (one load at a time)
    lock: threading.RLock = field(default_factory=threading.RLock)
    backbone: Any = None
    error: str | None = None
    details: str | None = None
    seconds: float | None = None
    transient: bool = False
    borrowers: int = 0
    released: bool = False
    _resources: OrderedDict = field(default_factory=OrderedDict, repr=False)
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
            with self.gate:  # a load needs about twice the backbone's size for a moment: one at a time
                extra = {"image_only": True} if self.image_only else {}
                self.backbone = self.loader(self.spec, device=self.device, **extra)
        except TransientError as exc:
            self.error, self.transient = str(exc), True
        except ExplorerError as exc:
            self.error = str(exc)
        except Exception as exc:  # out of memory may pass; anything else is a bug: keep its traceback
            if is_out_of_memory(exc):
                self.error, self.transient = f"Not enough memory to load the backbone {self.spec} now; try again later.", True
            else:
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
            raise (TransientError if self.transient else ExplorerError)(self.error)
        return self.backbone

    def handle(self, timeout: float | None = None) -> "BackboneHandle":
        """The loaded backbone with this slot's lock (blocking until loaded)."""
        return BackboneHandle(self, self.wait(timeout))

    def resource(self, key: Any, build: Callable[[Any], Any]) -> Any:
        """``build(backbone)`` (under the lock), kept in this slot by ``key`` until it is evicted."""
        with self.lock:
            if key in self._resources:
                self._resources.move_to_end(key)
                return self._resources[key]
            value = build(self.wait())
            if not self.released:
                self._resources[key] = value
                while len(self._resources) > MAX_RESOURCES:
                    self._resources.popitem(last=False)
            return value

    def release(self) -> None:
        """Evicted: drop what was built on the backbone (the backbone goes with the last reference to the slot)."""
        self.released = True
        self._resources.clear()


@dataclass(frozen=True)
class BackboneHandle:
    """A loaded backbone and its slot: ``with handle.use() as backbone:`` holds the backbone's lock."""

    slot: BackboneSlot
    backbone: Any

    @property
    def backbone_id(self) -> str:
        return self.backbone.backbone_id

    @contextlib.contextmanager
    def use(self) -> Iterator[Any]:
        with self.slot.lock:
            yield self.backbone

    def cached(self, key: Any, build: Callable[[Any], Any]) -> Any:
        """``build(backbone)`` under the lock, kept with the backbone (dropped when it is evicted)."""
        return self.slot.resource(key, build)


def _load_backbone(spec: str, device: str | None = None, precision: str = "fp32", image_only: bool = False):
    """explorer.backbones.load.load_backbone, imported in the loader thread (torch and open_clip take
    seconds to import: a page that makes the pool must not wait for them)."""
    from explorer.backbones.load import load_backbone

    return load_backbone(spec, device=device, precision=precision, image_only=image_only)


def _usable(slot: BackboneSlot | None) -> bool:
    """A slot that has (or will have) its backbone: loading, or loaded without error."""
    return slot is not None and (slot.pending or slot.error is None)


class BackboneRegistry:
    """Slots by (spec, device) (and image-only ones), at most ``max_entries`` kept (least recently used
    evicted); thread-safe. ``precision``: what the default loader's backbones compute in (auto, fp32, bf16)."""

    def __init__(self, max_entries: int = 3, loader: Callable[..., Any] | None = None,
                 on_loaded: Callable[[BackboneSlot], None] | None = None,
                 on_evict: Callable[[BackboneSlot], None] | None = None, precision: str = "fp32"):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.loader = loader or functools.partial(_load_backbone, precision=precision)
        self.on_loaded, self.on_evict = on_loaded, on_evict
        self._slots: OrderedDict[tuple, BackboneSlot] = OrderedDict()
        self._lock = threading.Lock()
        self._load_gate = threading.Lock()

    def slot(self, spec: str, device: str | None = None, image_only: bool = False) -> BackboneSlot:
        """The slot of ``spec`` on ``device`` (loading starts in the background); marks it most recent.
        ``image_only``: the whole backbone's slot when there is one, else one of its image tower alone."""
        return self._take(spec, device, borrow=False, image_only=image_only)

    def _take(self, spec: str, device: str | None, borrow: bool, image_only: bool = False) -> BackboneSlot:
        whole, image = (spec, device), (spec, device, "image")
        with self._lock:
            image_slot = image_only and not _usable(self._slots.get(whole))
            key = image if image_slot else whole
            slot = self._slots.get(key)
            if slot is None or (slot.transient and not slot.pending):  # a transient failure: try again
                slot = BackboneSlot(spec, device, self.loader, self.on_loaded, image_only=image_slot, gate=self._load_gate)
                self._slots[key] = slot
            self._slots.move_to_end(key)
            slot.start()  # under the lock: two callers never start two loads of one slot
            slot.borrowers += 1  # not the one to make room (and kept while borrowed)
            replaced = [] if image_slot or image not in self._slots else [self._slots.pop(image)]
            evicted = replaced + self._evict_excess()
            if not borrow:
                slot.borrowers -= 1
        self._evicted(evicted)
        return slot

    def _evict_excess(self) -> list[BackboneSlot]:
        """Pop least recently used slots (not borrowed ones) beyond ``max_entries``; call under the lock."""
        evicted = []
        for key in [k for k, s in self._slots.items() if s.borrowers == 0]:
            if len(self._slots) <= self.max_entries:
                break
            evicted.append(self._slots.pop(key))
        return evicted

    def _evicted(self, slots: list[BackboneSlot]) -> None:
        for old in slots:
            old.release()
            if self.on_evict is not None:
                self.on_evict(old)

    def handle(self, spec: str, device: str | None = None, timeout: float | None = None) -> BackboneHandle:
        """The handle of ``spec`` (waits for it to load)."""
        return self.slot(spec, device).handle(timeout)

    def get(self, spec: str, device: str | None = None, timeout: float | None = None):
        """The loaded backbone of ``spec`` (waits for it)."""
        return self.slot(spec, device).wait(timeout)

    @contextlib.contextmanager
    def borrow(self, spec: str, device: str | None = None, timeout: float | None = None) -> Iterator[BackboneHandle]:
        """The handle of ``spec``, kept in the pool (never evicted) until the ``with`` block ends."""
        slot = self._take(spec, device, borrow=True)
        try:
            yield slot.handle(timeout)
        finally:
            with self._lock:
                slot.borrowers -= 1
                evicted = self._evict_excess()
            self._evicted(evicted)

    def slots(self) -> list[BackboneSlot]:
        """The slots kept now, most recently used last."""
        with self._lock:
            return list(self._slots.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._slots)
