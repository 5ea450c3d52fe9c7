"""The precision the image tower computes in: fp32, or bf16 where the hardware computes bf16 natively.

``--precision auto|fp32|bf16`` (CLI) and ``ORDINAL_EXPLORER_PRECISION`` (app) name a request;
:func:`resolve_precision` turns it into a :class:`Precision` for a device:

- ``auto``: bf16 on a CPU with AVX512_BF16 or AMX-BF16 (Linux: the ``/proc/cpuinfo`` flags) and on
  a CUDA device with native bf16 (``torch.cuda.is_bf16_supported(including_emulation=False)``);
  fp32 everywhere else. Without those instructions torch emulates bf16 on the CPU (a ViT-B image
  tower 6-8x slower than fp32 on an AVX2 CPU, one large matrix product 80x: benchmarks/README.md). macOS: Apple M2 and later
  have bf16 instructions (``hw.optional.arm.FEAT_BF16``), but torch's fp32 matrix products there
  run on Accelerate while its bf16 ones take generic dot-product kernels (faster than fp32 only
  for matrix-vector products), so ``auto`` stays fp32. Windows and ARM Linux: no flag the explorer
  trusts, so ``auto`` stays fp32 (conservative; unmeasured).
- ``bf16``: always runs bf16 (CPU and CUDA): where it is emulated, :meth:`Precision.sentence`
  says so in one sentence (never a silent fp32).
- ``fp32``: fp32.

Weights stay fp32 (the model is never cast): bf16 is ``torch.autocast(device, bfloat16)`` around the
image tower's forward (:meth:`Precision.autocast`), and features come back float32. A training run
in bf16 also autocasts its step's forward and backward (the text tower; the image tower when
fine-tuned) and keeps fp32 master weights, an fp32 loss and fp32 prototypes and metrics (TrainConfig.amp;
benchmarks/README.md: its speed and its checkpoints). :func:`native_cpu_bf16` is pure (tests feed it flags).
"""

from __future__ import annotations

import contextlib
import functools
import platform
import subprocess
from dataclasses import dataclass
from typing import Iterable

from explorer.core import settings
from explorer.core.errors import ExplorerError

PRECISIONS = ("auto", "fp32", "bf16")
NATIVE_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo names of the x86 bf16 instructions
MAC_BF16_FLAG = "FEAT_BF16"


def native_cpu_bf16(system: str, machine: str, flags: Iterable[str]) -> bool:
    """Whether torch computes bf16 natively on a CPU: x86-64 Linux with AVX512_BF16 or AMX-BF16.

    ``system`` / ``machine`` as :func:`platform.system` / :func:`platform.machine` name them, ``flags``
    the CPU's feature flags (:func:`cpu_flags`). macOS, Windows and ARM Linux: False (module docstring)."""
    if system != "Linux" or machine.lower() not in ("x86_64", "amd64"):
        return False
    return any(flag in set(flags) for flag in NATIVE_CPU_FLAGS)


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags: Linux ``/proc/cpuinfo`` (x86 ``flags``, ARM ``Features``); macOS
    ``FEAT_BF16`` when sysctl reports it; empty elsewhere or when unreadable."""
    system = platform.system()
    if system == "Linux":
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key.strip() in ("flags", "Features"):
                        return frozenset(value.split())
        except OSError:
            return frozenset()
    if system == "Darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return frozenset()
        return frozenset([MAC_BF16_FLAG]) if out.stdout.strip() == "1" else frozenset()
    return frozenset()


@dataclass(frozen=True)
class Precision:
    """What the image tower (and a training step) computes in on a device: ``name`` fp32 or bf16; ``native``: the hardware
    computes bf16 itself (False: emulated, slow); ``requested``: auto, fp32 or bf16."""

    name: str = "fp32"
    device_type: str = "cpu"
    native: bool = False
    requested: str = "fp32"

    @property
    def label(self) -> str:
        """Short form for the app: "fp32", "bf16 on this CPU", "bf16 on this GPU" or "bf16 (emulated: slow)"."""
        if self.name == "fp32":
            return "fp32"
        if not self.native:
            return "bf16 (emulated: slow)"
        return "bf16 on this GPU" if self.device_type == "cuda" else "bf16 on this CPU"

    def sentence(self) -> str:
        """The one line the CLI prints on stderr."""
        where = "GPU" if self.device_type == "cuda" else "CPU"
        if self.name == "bf16" and self.native:
            return f"precision: bf16 (this {where} computes bf16 natively; weights stay fp32)"
        if self.name == "bf16":
            return (f"precision: bf16, emulated: this {where} has no bf16 instructions torch uses (a CPU needs AVX512_BF16 "
                    "or AMX), so it runs several times slower than fp32 (6-8x for a ViT-B on an AVX2 CPU); "
                    "use --precision auto or fp32")
        if self.requested == "auto":
            return f"precision: fp32 (auto: this {where} has no native bf16)"
        return "precision: fp32"

    def autocast(self):
        """``torch.autocast`` to bf16 for a bf16 precision, else a no-op context."""
        if self.name != "bf16":
            return contextlib.nullcontext()
        import torch

        return torch.autocast(self.device_type, dtype=torch.bfloat16)


FP32 = Precision()


def resolve_precision(requested: str | None, device) -> Precision:
    """The :class:`Precision` of ``requested`` (auto, fp32, bf16; None: fp32) on ``device`` (a torch.device);
    auto is ``$ORDINAL_EXPLORER_PRECISION`` where that is set; one sentence for an unknown name or a device without bf16 at all."""
    requested = (requested or "fp32").strip().lower()
    source = ""
    if requested == "auto":
        requested, source = settings.default_precision(), f" (${settings.ENV_PRECISION})"  # what auto means here
    if requested not in PRECISIONS:
        raise ExplorerError(f"Unknown precision '{requested}'{source}; choose auto, fp32 or bf16.")
    kind = device.type
    if kind == "cuda":
        import torch

        native = bool(torch.cuda.is_bf16_supported(including_emulation=False))
        if requested == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=True):
            raise ExplorerError("This GPU cannot compute in bf16; use --precision fp32 or auto.")
    elif kind == "cpu":
        native = native_cpu_bf16(platform.system(), platform.machine(), cpu_flags())
    else:
        if requested == "bf16":
            raise ExplorerError(f"bf16 is supported on CPU and CUDA devices, not on {kind}; use --precision fp32 or auto.")
        native = False
    name = "bf16" if requested == "bf16" or (requested == "auto" and native) else "fp32"
    return Precision(name, kind, native and name == "bf16", requested)
