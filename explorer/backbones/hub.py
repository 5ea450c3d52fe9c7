"""Weights on the Hugging Face hub: the one download path of ``hf-hub:ORG/REPO`` specs and of the
open_clip zoo entries whose weights live on the hub (most ``NAME:TAG`` entries).

Everything goes through ``huggingface_hub.hf_hub_download`` (its cache layout, ETag checks and
in-download resumes); this module adds what the explorer needs around it:

- the hub environment (``HF_ENDPOINT``, ``HF_HOME`` / ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``) read
  when a download starts, by huggingface_hub's own ``constants`` code (it normally reads it once,
  at import, but a long-running app or a test may change it later);
- progress events ``progress(done_bytes, total_bytes, filename)`` and a cancel check
  ``should_stop()`` polled between chunks;
- the cache used as is when the hub is unreachable, and a failure within ~2 s (a TCP probe) when
  neither the hub nor the cache has the files, naming the model and how to pass a local file;
- every failure as one sentence (:class:`~explorer.core.errors.ExplorerError`). An interrupted
  download keeps no partial file: the next try starts it again cleanly.

Importable without torch (open_clip is imported only to look up zoo entries).
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import socket
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlparse

from explorer.backbones.spec import parse_backbone_spec
from explorer.core.errors import ExplorerError, TransientError, one_line

HUB_PROBE_SECONDS = 1.5
CONFIG_NAME = "open_clip_config.json"
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # open_clip's default, safetensors first

ProgressFn = Callable[[int, "int | None", str], None]
StopFn = Callable[[], bool]


class DownloadCancelled(ExplorerError):
    """The download was cancelled by its caller (``should_stop`` returned True); nothing partial is kept."""


@dataclass(frozen=True)
class HubEnv:
    """The hub settings in force now: endpoint URL, offline flag and cache folder."""

    endpoint: str
    offline: bool
    cache_dir: str


def hub_environment(cache_dir: str | None = None) -> HubEnv:
    """HF_ENDPOINT, HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) and HF_HUB_CACHE / HF_HOME as
    huggingface_hub reads them (its ``constants`` module, evaluated now); ``cache_dir`` overrides the cache."""
    from huggingface_hub import constants

    spec = importlib.util.spec_from_file_location("_explorer_hf_constants", constants.__file__)
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)  # stdlib-only module of assignments: the env read by huggingface_hub's code
    return HubEnv(fresh.ENDPOINT, bool(fresh.HF_HUB_OFFLINE), cache_dir or fresh.HF_HUB_CACHE)


def _follow_offline_flag(env: HubEnv) -> None:
    """huggingface_hub refuses every request while its import-time offline flag is set: make that
    flag follow the environment read now (the endpoint and cache are passed to each call)."""
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = env.offline


@dataclass(frozen=True)
class HubModel:
    """What a backbone spec needs from the hub: a repo and groups of file names (one file of each
    group, the first that exists), with the local-file spec to suggest when it cannot be had."""

    spec: str
    repo_id: str
    files: tuple[tuple[str, ...], ...]
    local_hint: str
    revision: str | None = None


def hub_model_for(spec: str) -> HubModel | None:
    """The hub files of ``spec`` (``hf-hub:`` specs and zoo entries with ``hf_hub`` in their
    pretrained cfg); None for demo, local files and zoo entries downloaded from a plain URL."""
    parsed = parse_backbone_spec(spec, check_files=False)
    if parsed.source == "hub":
        return HubModel(parsed.text, parsed.name, ((CONFIG_NAME,), WEIGHT_NAMES),
                        "ARCH@/path/to/open_clip_model.safetensors")
    if parsed.source != "zoo":
        return None
    import open_clip

    pcfg = open_clip.get_pretrained_cfg(parsed.name, parsed.tag) if parsed.name in open_clip.list_models() else {}
    return zoo_hub_model(parsed.text, parsed.name, pcfg or {})


def zoo_hub_model(spec: str, arch: str, pretrained_cfg: dict[str, Any]) -> HubModel | None:
    """The hub files of a zoo entry from its open_clip pretrained cfg (``hf_hub``: ``org/repo/`` or
    ``org/repo/file.bin``), or None when it has no hub location."""
    hub_id = pretrained_cfg.get("hf_hub")
    if not hub_id:
        return None
    parts = hub_id.strip("/").split("/")
    repo_id, rest = "/".join(parts[:2]), "/".join(parts[2:])
    if hub_id.endswith("/") or not rest:  # a folder (or the repo root): open_clip's default file names
        names = tuple(f"{rest}/{n}" if rest else n for n in WEIGHT_NAMES)
    else:
        names = _safe_alternatives(rest) + (rest,)
    return HubModel(spec, repo_id, (names,), f"{arch}@/path/to/weights")


def _safe_alternatives(filename: str) -> tuple[str, ...]:
    """open_clip's rule: a ``.bin`` / ``.pth`` file may have a ``.safetensors`` twin, tried first."""
    if filename.endswith("open_clip_pytorch_model.bin"):
        return (filename[: -len("open_clip_pytorch_model.bin")] + "open_clip_model.safetensors",)
    if filename.endswith((".bin", ".pth")):
        return (filename[:-4] + ".safetensors",)
    return ()


# --- cache and reachability ---------------------------------------------------------------------


def cached_paths(model: HubModel, cache_dir: str | None = None) -> list[str] | None:
    """Local paths of one file per group when all are in the hub cache (no network), else None."""
    from huggingface_hub import try_to_load_from_cache

    env_cache = hub_environment(cache_dir).cache_dir
    out = []
    for group in model.files:
        found = None
        for name in group:
            hit = try_to_load_from_cache(model.repo_id, name, cache_dir=env_cache, revision=model.revision)
            if isinstance(hit, str):
                found = hit
                break
        if found is None:
            return None
        out.append(found)
    return out


def hub_reachable(url: str, seconds: float = HUB_PROBE_SECONDS) -> bool:
    """True when a TCP connection to the URL's host opens within ``seconds`` (DNS included)."""
    parts = urlparse(url)
    host = parts.hostname or url
    port = parts.port or (80 if parts.scheme == "http" else 443)

    def connect():
        with socket.create_connection((host, port), timeout=seconds):
            return True

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return bool(pool.submit(connect).result(timeout=seconds))
    except (OSError, concurrent.futures.TimeoutError):
        return False
    finally:
        pool.shutdown(wait=False)


def unavailable_message(model: HubModel, env: HubEnv) -> str:
    """One sentence: the model is neither cached nor downloadable now, and how to pass a local file."""
    why = ("HF_HUB_OFFLINE is set" if env.offline
           else f"{urlparse(env.endpoint).hostname or env.endpoint} cannot be reached")
    return (f"Cannot get the weights of {model.spec}: they are not in the local hub cache ({env.cache_dir}) and {why}; "
            f"download them elsewhere ({env.endpoint}/{model.repo_id}) and pass the file as '{model.local_hint}'.")


# --- downloading --------------------------------------------------------------------------------


def fetch(model: HubModel, progress: ProgressFn | None = None, should_stop: StopFn | None = None,
          cache_dir: str | None = None) -> list[str]:
    """Local paths of the model's files (one per group): from the cache when the hub is offline or
    unreachable, else through ``hf_hub_download`` (which reuses up-to-date cached files)."""
    env = hub_environment(cache_dir)
    _follow_offline_flag(env)
    cached = cached_paths(model, env.cache_dir)
    if env.offline or not hub_reachable(env.endpoint):
        if cached is not None:
            return cached
        raise TransientError(unavailable_message(model, env))
    return [_download_group(model, group, env, progress, should_stop) for group in model.files]


def _download_group(model: HubModel, group: tuple[str, ...], env: HubEnv, progress, should_stop) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    for name in group:
        try:
            return hf_hub_download(model.repo_id, name, revision=model.revision, cache_dir=env.cache_dir,
                                   endpoint=env.endpoint, tqdm_class=_progress_class(name, progress, should_stop))
        except LocalEntryNotFoundError as exc:  # (a subclass of EntryNotFoundError) the hub did not answer
            raise TransientError(unavailable_message(model, env)) from exc
        except EntryNotFoundError:
            continue
        except GatedRepoError as exc:
            raise ExplorerError(f"{model.spec} is gated on the hub; accept its terms and log in (hf auth login), "
                                f"or pass a local file as '{model.local_hint}'.") from exc
        except RepositoryNotFoundError as exc:
            raise ExplorerError(f"The hub has no model repository {model.repo_id} (or it is private).") from exc
        except DownloadCancelled:
            raise
        except _network_errors() as exc:
            raise TransientError(
                f"Downloading {name} of {model.spec} was interrupted ({one_line(exc)}); nothing partial was kept, "
                "so running it again restarts the download cleanly."
            ) from exc
    raise ExplorerError(f"The hub repository {model.repo_id} has none of the files {', '.join(group)}.")


def _network_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub import errors

    return (OSError, getattr(errors, "HTTPError", OSError))  # httpx's base error, as huggingface_hub re-exports it


def _progress_class(filename: str, progress: ProgressFn | None, should_stop: StopFn | None):
    """A tqdm stand-in for ``hf_hub_download(tqdm_class=...)`` that reports bytes and polls for cancel."""

    class _Report:
        def __init__(self, total=None, initial=0, **_ignored):
            self.total, self.n = total, int(initial or 0)
            self._emit()

        def _emit(self):
            if should_stop is not None and should_stop():
                raise DownloadCancelled(f"The download of {filename} was cancelled; nothing partial was kept.")
            if progress is not None:
                progress(self.n, self.total, filename)

        def update(self, n=1):
            self.n += int(n)
            self._emit()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def close(self):
            pass

        def set_description(self, *a, **k):
            pass

    return _Report


def remote_size(model: HubModel, seconds: float = HUB_PROBE_SECONDS) -> int | None:
    """Bytes to download (sum over the groups' first existing files) from the hub's metadata; None
    offline or when the hub does not answer quickly."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    env = hub_environment()
    _follow_offline_flag(env)
    if env.offline or not hub_reachable(env.endpoint, seconds):
        return None
    total = 0
    for group in model.files:
        for name in group:
            url = hf_hub_url(model.repo_id, name, revision=model.revision, endpoint=env.endpoint)
            try:
                meta = get_hf_file_metadata(url, timeout=seconds * 2, endpoint=env.endpoint)
            except Exception:  # a missing alternative, or any hub trouble: the size is then unknown
                continue
            if meta.size is not None:
                total += meta.size
                break
        else:
            return None
    return total
