"""Write checkpoints/demo-backbone.safetensors: the tiny seeded open_clip CLIP behind the `demo` spec.

The architecture is explorer.backbones.sources.DEMO_CONFIG, the weights open_clip's own initialisation
under torch.manual_seed(DEMO_SEED), stored as fp16. The file is committed, so every machine loads
the same numbers whatever its torch version; re-running this script reproduces it on a given
torch version (torch's RNG streams are not promised stable across versions).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from explorer.backbones.sources import DEMO_CONFIG, DEMO_SEED, build_demo_model  # noqa: E402
from explorer.backbones.spec import DEMO_ARCH, DEMO_WEIGHTS  # noqa: E402


def main() -> None:
    model = build_demo_model(DEMO_SEED)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    meta = {"arch": DEMO_ARCH, "config": json.dumps(DEMO_CONFIG), "seed": str(DEMO_SEED), "torch": torch.__version__}
    DEMO_WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(DEMO_WEIGHTS), metadata=meta)
    n = sum(v.numel() for v in state.values())
    print(f"wrote {DEMO_WEIGHTS} ({n / 1e6:.2f} M parameters, {DEMO_WEIGHTS.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
