"""Load and crash test of ``muva serve`` on loopback (CPU).  Figures are printed, never asserted.

Load mode (default): starts ``python -m muva serve`` as a subprocess on a free loopback
port with a model (a tiny random one by default; ``--model PATH`` for the full ViT-B/16
checkpoint or an int8 ONNX file) and a drawn-person gallery (``--gallery DIR`` for your
own), then ``--clients`` concurrent httpx clients send ``--requests`` searches in total
(one crop each, ``k=10``, part masks on unless ``--no-masks``) and stop.  Prints requests/s,
p50 / p90 / p99 latency, failed requests and the server's RSS before, after a tenth (warm-up), after
half and after all the requests (psutil): growth over the second half would be a leak.

Crash mode (``--crash``): adds images one by one (``POST /gallery``), SIGKILLs the server
at a random moment, restarts it on the same state folder and checks that every
acknowledged addition is present (listed by ``/stats`` size, image served by id) and that
nothing half-written shows (size = base + acknowledged, or + 1 for the add in flight).
``--rounds`` kill/restart cycles.

    python benchmarks/bench_serve.py                         # tiny model, 4 clients, 2000 requests
    python benchmarks/bench_serve.py --model model.onnx --clients 8 --requests 500
    python benchmarks/bench_serve.py --crash --rounds 5
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

try:
    import psutil
except ImportError:  # RSS figures are skipped
    psutil = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_gallery(root: Path, ids: int) -> Path:
    """A drawn-person gallery (Market-layout names, 3 cameras)."""
    from muva.data.synth import SynthConfig, generate

    cfg = SynthConfig(num_domains=1, ids_per_domain=2, test_ids_per_domain=ids, images_per_id=2, gallery_per_id=3,
                      distractors_per_domain=0, num_cameras=3, width=64, height=128)
    generate(cfg, root)
    return root / "domain_0" / "bounding_box_test"


def make_tiny_model(path: Path) -> Path:
    from muva.models import build_model, save_model, tiny_config

    return Path(save_model(build_model(tiny_config(), num_classes=4), path))


class Server:
    """``python -m muva serve`` in a subprocess on loopback."""

    def __init__(self, model: Path, gallery: Path, state: Path, extra: list[str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "muva", "serve", "--model", str(model), "--gallery", str(gallery),
                    "--state", str(state), "--host", "127.0.0.1", "--port", str(self.port), *extra]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 600) -> "Server":
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read().decode(errors='replace')[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not answer /health in time")

    def rss_mb(self) -> float | None:
        if psutil is None or self.proc is None:
            return None
        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def load(server: Server, images: list[Path], clients: int, requests: int, masks: bool, headers: dict) -> None:
    payloads = [(p.name, p.read_bytes()) for p in images]
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=server.url, timeout=60, headers=headers) as c:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                name, data = rng.choice(payloads)
                t0 = time.perf_counter()
                try:
                    r = c.post("/search", files={"images": (name, data, "image/jpeg")},
                               data={"k": "10", "masks": "true" if masks else "false"})
                    ok = r.status_code == 200
                    err = f"HTTP {r.status_code}: {r.text[:120]}"
                except httpx.HTTPError as e:
                    ok, err = False, repr(e)
                dt = time.perf_counter() - t0
                with lock:
                    (latencies.append(dt * 1000) if ok else failures.append(err))
                    done = len(latencies) + len(failures)
                    if done in marks:  # RSS after a tenth (warm-up) and half of the requests
                        marks[done] = server.rss_mb()

    marks: dict[int, float | None] = {max(1, requests // 10): None, max(1, requests // 2): None}
    rss0 = server.rss_mb()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    rss1 = server.rss_mb()
    print(f"requests     {len(latencies) + len(failures)} ({clients} clients, masks {'on' if masks else 'off'})")
    print(f"throughput   {len(latencies) / wall:.1f} requests/s over {wall:.1f} s")
    print(f"latency ms   p50 {pct(latencies, 50):.1f}   p90 {pct(latencies, 90):.1f}   p99 {pct(latencies, 99):.1f}")
    print(f"failed       {len(failures)}" + (f"   first: {failures[0]}" if failures else ""))
    if rss0 is not None:
        tenth, half = (marks[k] for k in sorted(marks))
        print(f"server RSS   {rss0:.0f} MiB before, {tenth:.0f} after a tenth of the requests (warm-up), "
              f"{half:.0f} after half, {rss1:.0f} after all: {rss1 - half:+.0f} MiB over the second half")
    else:
        print("server RSS   (pip install psutil to see it)")
    stats = httpx.get(server.url + "/stats", headers=headers).json()
    print(f"server view  latency_ms {stats.get('latency_ms')}   requests {stats.get('requests')}")


def crash(server: Server, images: list[Path], rounds: int, headers: dict, seed: int) -> bool:
    rng = random.Random(seed)
    acked: list[str] = []
    base = httpx.get(server.url + "/stats", headers=headers).json()["gallery_size"]
    ok = True
    for rnd in range(1, rounds + 1):
        stop_at = time.monotonic() + rng.uniform(0.5, 3.0)
        killer = threading.Timer(max(0.0, stop_at - time.monotonic()), server.kill)
        killer.start()
        in_flight = 0
        with httpx.Client(base_url=server.url, timeout=30, headers=headers) as c:
            while server.proc.poll() is None:
                p = rng.choice(images)
                in_flight = 1
                try:
                    r = c.post("/gallery", files={"images": (p.name, p.read_bytes(), "image/jpeg")},
                               data={"pid": "9999", "camid": "0"})
                except httpx.HTTPError:
                    break  # killed mid-request: this addition was never acknowledged
                if r.status_code == 200:
                    acked.extend(r.json()["added"])
                    in_flight = 0
                else:
                    print(f"  add refused: HTTP {r.status_code} {r.text[:120]}")
                    in_flight = 0
        killer.join()
        server.start()
        size = httpx.get(server.url + "/stats", headers=headers).json()["gallery_size"]
        missing = [i for i in acked if httpx.get(f"{server.url}/gallery/{i}/image", headers=headers).status_code != 200]
        expected = base + len(acked)
        good = not missing and expected <= size <= expected + in_flight
        ok &= good
        print(f"round {rnd}: {len(acked)} acknowledged so far, gallery {size} (expected {expected}"
              f"{' or +1 in flight' if in_flight else ''}), missing {len(missing)}  {'OK' if good else 'FAILED'}")
        if size == expected + 1:  # the add in flight made it to disk before its reply: count it from now on
            base += 1
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="checkpoint (.safetensors) or .onnx; default: a tiny random model")
    ap.add_argument("--gallery", type=Path, help="gallery folder; default: a drawn-person gallery")
    ap.add_argument("--ids", type=int, default=20, help="identities of the drawn gallery")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--no-masks", action="store_true")
    ap.add_argument("--token", help="sent as Authorization: Bearer (also passed to the server)")
    ap.add_argument("--crash", action="store_true", help="kill -9 / restart test of gallery additions")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--serve-arg", action="append", default=[], help="extra argument for `muva serve` (repeatable)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        tmp = Path(tmp)
        model = args.model or make_tiny_model(tmp / "tiny.safetensors")
        gallery = args.gallery or make_gallery(tmp / "synth", args.ids)
        images = sorted(p for p in gallery.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:200]
        extra = list(args.serve_arg) + (["--token", args.token] if args.token else [])
        headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
        server = Server(model, gallery, tmp / "state", extra)
        t0 = time.perf_counter()
        server.start()
        print(f"server up in {time.perf_counter() - t0:.1f} s  model {model.name}  gallery {len(images)} images")
        try:
            if args.crash:
                return 0 if crash(server, images, args.rounds, headers, args.seed) else 1
            load(server, images, args.clients, args.requests, not args.no_masks, headers)
            return 0
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
