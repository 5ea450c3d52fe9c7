"""Resume states of interrupted runs: ``<stem>.resume.safetensors`` beside the checkpoint.

Tensors: ``param.<name>`` (trainable parameters) and ``opt.<param id>.<key>`` (optimizer state);
metadata key ``resume`` holds JSON: the epoch just finished, best value / epoch / validation
metrics so far, the run's config, optimizer scalars and param groups. No pickle anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from explorer.core.errors import ExplorerError

RESUME_KEY = "resume"
RESUME_SUFFIX = ".resume.safetensors"


def resume_path(out: str | Path) -> Path:
    """Where the resume state of the run writing ``out`` lives."""
    out = Path(out)
    return out.with_name(out.stem + RESUME_SUFFIX)


def is_resume_name(path: str | Path) -> bool:
    """True for a file named like a resume state."""
    return Path(path).name.endswith(RESUME_SUFFIX)


def save_resume(path: Path, module, optimizer, meta: dict[str, Any]) -> None:
    """Write trainable parameters, optimizer state and ``meta`` atomically."""
    from explorer.core.fsio import save_safetensors

    tensors = {f"param.{k}": v.detach().float() for k, v in module.named_parameters() if v.requires_grad}
    opt = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for pid, state in opt["state"].items():
        for key, value in state.items():
            if hasattr(value, "detach"):
                tensors[f"opt.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    meta = {**meta, "optimizer_scalars": scalars, "param_groups": opt["param_groups"]}
    save_safetensors(path, tensors, metadata={RESUME_KEY: json.dumps(meta, default=float)})


def load_resume(path: Path, module, optimizer) -> dict[str, Any]:
    """Restore parameters and optimizer state saved by :func:`save_resume`; returns its metadata."""
    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()[RESUME_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.requires_grad:
                param.copy_(tensors[f"param.{name}"].to(param.device))
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in meta["optimizer_scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta


def describe_resume(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    """What ``info`` shows of a resume state: which run, which epoch, how to continue it."""
    config = meta.get("config") or {}
    epochs = config.get("epochs")
    out = config.get("out") or str(path.with_name(path.name[: -len(RESUME_SUFFIX)] + ".safetensors"))
    return {
        "content": "resume-state",
        "path": str(path),
        "run": config.get("name") or Path(out).stem,
        "checkpoint": out,
        "dataset": config.get("dataset"),
        "method": (config.get("learner") or {}).get("kind"),
        "epochs_done": int(meta.get("epoch", -1)) + 1,
        "epochs": epochs,
        "best_epoch": None if meta.get("best_epoch") is None else int(meta["best_epoch"]) + 1,
        "best_val_mae": _headline(meta.get("best_val") or {}),
        "continue_with": f"ordinal-explorer train {config.get('dataset', 'DATASET')} --out {out} --resume",
    }


def _headline(metrics: dict[str, Any]) -> float | None:
    """The MAE of a method's point estimate (label units) when stored, else the expected-rank MAE."""
    return metrics.get("mae_value", metrics.get("mae_exp"))


def read_resume_meta(raw: str | None, path: Path) -> dict[str, Any]:
    """Parse the ``resume`` metadata of a safetensors header; one sentence when it is corrupt."""
    try:
        meta = json.loads(raw or "")
    except json.JSONDecodeError as exc:
        raise ExplorerError(f"{path.name} is a resume state with corrupt metadata ({exc.msg}).") from exc
    if not isinstance(meta, dict):
        raise ExplorerError(f"{path.name} is a resume state with unexpected metadata.")
    return meta


# Settings a resume state only fits when they are unchanged (they decide the tensors and the steps).
RESUME_KEYS = ("learner", "mode", "batch_size", "optimizer", "dataset", "shots", "label_shift", "seed")


def read_resume_config(path: Path) -> dict[str, Any]:
    """The run config a resume state was saved with (without reading its tensors)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(read_resume_meta((f.metadata() or {}).get(RESUME_KEY), path).get("config") or {})


def check_resumable(saved: dict[str, Any], config, path: Path) -> None:
    """One sentence when ``config`` differs from the run that saved the resume state in what matters."""
    current = config.to_dict()
    differ = [k for k in RESUME_KEYS if k in saved and saved[k] != current.get(k)]
    if differ:
        raise ExplorerError(
            f"{path.name} was saved by a run with other settings ({', '.join(differ)} differ); resume with the "
            "same settings, or start afresh without --resume (the resume state is then replaced)."
        )
