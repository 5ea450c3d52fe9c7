"""A loopback stand-in for the Hugging Face hub (tests only; never the real network).

``HubServer`` serves folders in the hub's file layout: ``HEAD``/``GET
/{org}/{repo}/resolve/{revision}/{filename}`` with the headers ``huggingface_hub.hf_hub_download``
relies on (``X-Repo-Commit``, ``ETag``, ``Content-Length``, ``Accept-Ranges``; ``Range`` requests
answered with 206 + ``Content-Range``; 404 with ``X-Error-Code: EntryNotFound`` / ``RepoNotFound``).
``cut(filename, after)`` makes the next GET of a file stop after ``after`` bytes (the connection is
closed mid-body) and every later GET of it close at once, until ``heal()``; ``chunk_delay`` makes
it a slow hub (a pause after every MiB).

``make_tiny_hub_model(folder, seed)`` writes a small seeded open_clip CLIP as ``open_clip_config.json``
+ ``open_clip_model.safetensors`` (what open_clip reads for ``hf-hub:`` models).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TINY_MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TINY_PREPROCESS_CFG = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}


def make_tiny_hub_model(folder: Path, seed: int = 7) -> Path:
    """Write a seeded tiny open_clip CLIP in the hub's open_clip layout into ``folder``."""
    import torch
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = CLIP(TINY_MODEL_CFG["embed_dim"], TINY_MODEL_CFG["vision_cfg"], TINY_MODEL_CFG["text_cfg"])
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100.0))
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": TINY_MODEL_CFG, "preprocess_cfg": TINY_PREPROCESS_CFG}, indent=2))
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder


class HubServer:
    """A ThreadingHTTPServer on 127.0.0.1 serving ``repos`` ({"org/repo": folder}); use as a context manager."""

    def __init__(self, repos: dict[str, Path], chunk_delay: float = 0.0):
        self.repos = {k: Path(v) for k, v in repos.items()}
        self.chunk_delay = chunk_delay  # seconds between 1 MiB pieces of a body (a slow hub)
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self._cuts: dict[str, int | None] = {}  # filename -> bytes to send (None: close at once)
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> "HubServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (the port then refuses connections)."""
        if self.thread is not None:
            self.httpd.shutdown()
            self.thread.join(5)
            self.thread = None
        self.httpd.server_close()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def cut(self, filename: str, after: int) -> None:
        """The next GET of ``filename`` sends ``after`` bytes and drops the connection; later ones drop at once."""
        with self._lock:
            self._cuts[filename] = after

    def heal(self) -> None:
        with self._lock:
            self._cuts.clear()

    def gets(self, filename: str) -> list[str | None]:
        """Range headers of the GETs of ``filename`` so far."""
        return [r for m, p, r in self.requests if m == "GET" and p.endswith("/" + filename)]

    def _take_cut(self, filename: str) -> tuple[bool, int | None]:
        with self._lock:
            if filename not in self._cuts:
                return False, None
            after = self._cuts[filename]
            self._cuts[filename] = None
            return True, after

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self._serve(head=True)

            def do_GET(self):
                self._serve(head=False)

            def _serve(self, head: bool):
                server.requests.append((self.command, self.path, self.headers.get("Range")))
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._error(404, "RepoNotFound")
                repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
                folder = server.repos.get(repo)
                if folder is None:
                    return self._error(404, "RepoNotFound")
                path = folder / filename
                if not path.is_file():
                    return self._error(404, "EntryNotFound")
                data = path.read_bytes()
                start = 0
                rng = self.headers.get("Range")
                status = 200
                if rng and rng.startswith("bytes=") and not head:
                    start = int(rng[len("bytes="):].split("-")[0] or 0)
                    status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if head:
                    return
                is_cut, after = server._take_cut(filename)
                if is_cut:
                    if after:
                        self.wfile.write(body[:after])
                        self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                step = 1 << 20
                for i in range(0, len(body), step):
                    self.wfile.write(body[i : i + step])
                    if server.chunk_delay:
                        time.sleep(server.chunk_delay)

            def _error(self, status: int, code: str):
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler
