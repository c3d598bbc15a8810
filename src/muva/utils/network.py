"""Can anything be downloaded now?  One fast answer shared by every weight loader.

An offline setting (:data:`OFFLINE_VARS`) wins; otherwise one short TCP connect per process
and host (through ``HTTPS_PROXY`` when set) decides.  Loaders ask :func:`network_problem`
before any download and, when it answers, read only local caches — inside
:func:`hub_offline` the Hugging Face hub makes no request and so no minute of retries.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import urllib.parse

__all__ = ["OFFLINE_VARS", "PROBE_TIMEOUT", "offline_flag", "network_problem", "hub_offline"]

#: settings that forbid downloads (any of them set to 1 / true / yes / on).
OFFLINE_VARS = ("MUVA_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
PROBE_TIMEOUT = 1.5  # seconds a TCP connect may take before the host counts as unreachable
_PROBES: dict[tuple[str, int], bool] = {}


def offline_flag() -> str | None:
    """``"HF_HUB_OFFLINE=1"`` (say) when an offline setting is on, else None."""
    for var in OFFLINE_VARS:
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var}={os.environ[var].strip()}"
    return None


def _address(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    return parts.hostname or "", parts.port or (80 if parts.scheme == "http" else 443)


def _reachable(host: str, port: int, timeout: float) -> bool:
    """One TCP connect per process and host; a thread bounds name resolution by the same wait."""
    if (host, port) not in _PROBES:
        answer: list[bool] = []

        def connect() -> None:
            try:
                socket.create_connection((host, port), timeout=timeout).close()
                answer.append(True)
            except OSError:
                answer.append(False)

        probe = threading.Thread(target=connect, name="muva-network-probe", daemon=True)
        probe.start()
        probe.join(timeout + 0.5)
        _PROBES[(host, port)] = bool(answer and answer[0])
    return _PROBES[(host, port)]


def network_problem(url: str | None = None, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why nothing can be downloaded from ``url`` (default: the hub, ``HF_ENDPOINT``) now, or None: an offline
    setting (:data:`OFFLINE_VARS`), or the host (or ``HTTPS_PROXY``) not accepting a TCP connection in ``timeout`` s."""
    flag = offline_flag()
    if flag:
        return f"offline mode is set ({flag})"
    url = url or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    scheme = url.split("://", 1)[0].lower() if "://" in url else "https"
    proxy = os.environ.get(f"{scheme}_proxy") or os.environ.get(f"{scheme.upper()}_PROXY")
    host, port = _address(proxy or url)
    if host and not _reachable(host, port, timeout):
        via = f" through the proxy {host}:{port}" if proxy else ""
        return f"the network is unreachable ({_address(url)[0]} did not answer within {timeout:g} s{via})"
    return None


@contextlib.contextmanager
def hub_offline():
    """Inside, the Hugging Face hub answers from its local cache only: no request, no retry."""
    import huggingface_hub.constants as hub

    before, saved = os.environ.get("HF_HUB_OFFLINE"), hub.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], hub.HF_HUB_OFFLINE = "1", True  # the hub reads the variable once, at import
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = saved
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before
