"""``muva serve``: an HTTP person-search service over a gallery (FastAPI + uvicorn).

fastapi, uvicorn and torch are imported inside the command, so ``muva --help`` stays fast and
a missing ``muva[serve]`` extra is one clear message.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Optional

import typer

from muva.utils.errors import UsageError

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_binding(host: str, token: Optional[str], insecure: bool) -> None:
    """Refuse to serve a gallery to the network without a token (unless --insecure says so)."""
    if token is not None and not token.strip():
        raise UsageError("--token is empty; pass a long random string, e.g. from secrets.token_urlsafe(32)")
    if not is_loopback(host) and not token and not insecure:
        raise UsageError(f"--host {host} is reachable from other machines: pass --token TOKEN (or $MUVA_SERVE_TOKEN), "
                         "or --insecure to serve without one")


def serve(
    model: Path = typer.Option(..., "--model", "-m", help="Model file: a training checkpoint (save_model .safetensors) or an exported .onnx."),
    gallery: Path = typer.Option(..., "--gallery", "-g", help="A folder of images (extracted once, resumable) or a `muva extract` feature folder."),
    index: str = typer.Option("exact", "--index", help="exact (faiss Flat), ivf or hnsw."),
    state: Optional[Path] = typer.Option(None, "--state", help="Folder for extracted features and gallery changes (default runs/serve/<gallery name>-<hash>)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; anything but loopback needs --token or --insecure."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    token: Optional[str] = typer.Option(None, "--token", envvar="MUVA_SERVE_TOKEN", show_envvar=True,
                                        help="Require this bearer token (header, ?token= or muva_token cookie). Prefer the env var: it stays out of `ps`."),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a non-loopback --host without a token."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, …"),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Images per forward pass (extraction and requests)."),
    max_batch: int = typer.Option(16, "--max-batch", help="Images per request, at most."),
    max_k: int = typer.Option(100, "--max-k", help="Results per query, at most."),
    max_file_mb: float = typer.Option(10.0, "--max-file-mb", help="Size of one uploaded image, at most (MiB)."),
    max_request_mb: float = typer.Option(64.0, "--max-request-mb", help="Size of one request body, at most (MiB)."),
    max_megapixels: float = typer.Option(40.0, "--max-megapixels", help="Pixels of one uploaded image, at most (millions)."),
) -> None:
    """Serve person search over a gallery: POST /search, GET /gallery/{id}/image, POST/DELETE /gallery, /stats (docs at /docs)."""
    check_binding(host, token, insecure)
    if index not in ("exact", "ivf", "hnsw"):
        raise UsageError(f"--index must be exact, ivf or hnsw, not {index!r}")
    for name, value in (("--max-batch", max_batch), ("--max-k", max_k), ("--port", port + 1)):
        if value < 1:
            raise UsageError(f"{name} must be at least 1")
    try:
        import fastapi  # noqa: F401 - optional (muva[serve])
        import multipart  # noqa: F401 - python-multipart, for the upload forms
        import uvicorn
    except ImportError as exc:
        raise UsageError(f"muva serve needs {exc.name}: pip install 'muva[serve]'") from None
    import logging

    from rich.console import Console

    from muva.serve.app import create_app
    from muva.serve.limits import Limits
    from muva.serve.service import open_service

    console = Console(stderr=True)
    limits = Limits(max_file_bytes=int(max_file_mb * 2**20), max_request_bytes=int(max_request_mb * 2**20),
                    max_pixels=int(max_megapixels * 1e6), max_batch=max_batch, max_k=max_k)
    service = open_service(model, gallery, state=state, index=index, device=device, batch_size=batch_size, limits=limits, token=token)
    served = logging.getLogger("muva.serve")  # access lines (path, status, ms; never query strings) and errors
    if not served.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        served.addHandler(handler)
        served.propagate = False
    served.setLevel(logging.INFO)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"serving {len(service.gallery):,} gallery images ({service.gallery.kind} index, {service.model_name}) "
                  f"at http://{shown}:{port}/ (API docs /docs){'' if token else ', no token'}; Ctrl-C stops")
    # access_log=False: uvicorn's access lines include query strings (?token=...); the app logs its own without them
    uvicorn.run(create_app(service), host=host, port=port, access_log=False, log_level="info", server_header=False)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
