"""``muva serve``: the HTTP API over a tiny model and a drawn gallery (TestClient, no network)."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("faiss")
from fastapi.testclient import TestClient  # noqa: E402

from _helpers import tiny_checkpoint  # noqa: E402
from muva.serve.app import STATIC, create_app  # noqa: E402
from muva.serve.gallery import JOURNAL, Gallery  # noqa: E402
from muva.serve.limits import Limits  # noqa: E402
from muva.serve.service import open_service  # noqa: E402
from muva.data.parts import get_part  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-Token-value-1234567890"


def _image(seed: int, size=(64, 128)) -> Image.Image:
    """A coarse colour pattern per seed (distinct features for a random tiny model)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (8, 4, 3))
    arr = np.kron(base, np.ones((size[1] // 8, size[0] // 4, 1))) + rng.normal(0, 8, (size[1], size[0], 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    logging.getLogger("muva.models").setLevel(logging.ERROR)
    tmp = tmp_path_factory.mktemp("serve")
    ckpt = tiny_checkpoint(tmp / "tiny.safetensors", num_classes=3)
    gallery = tmp / "gallery"
    gallery.mkdir()
    for pid in range(1, 4):
        for cam in (1, 2):  # Market names: camera c1 → camid 0, c2 → camid 1
            _image(10 * pid + cam).save(gallery / f"{pid:04d}_c{cam}s1_000000_00.jpg", quality=95)
    service = open_service(ckpt, gallery, state=tmp / "state", progress=False)
    return {"ckpt": ckpt, "gallery": gallery, "tmp": tmp, "service": service}


@pytest.fixture(scope="module")
def client(setup):
    return TestClient(create_app(setup["service"]))


def _files(*items):
    return [("images", item) for item in items]


def _query(path: Path):
    return ("images", (path.name, path.read_bytes(), "image/jpeg"))


def test_health_and_stats(client):
    assert client.get("/health").json() == {"status": "ok"}
    s = client.get("/stats").json()
    assert s["gallery_size"] == 6 and s["index"] == "exact" and s["model"] == "tiny.safetensors"
    assert set(s["requests"]) == {"search", "gallery_add", "gallery_delete", "errors_4xx"}
    assert set(s["latency_ms"]) == {"p50", "p90", "p99"}
    assert s["limits"]["max_batch"] == 16 and s["limits"]["max_k"] == 100


def test_search_ranks_the_own_copy_first_with_masks(setup, client):
    paths = sorted(setup["gallery"].iterdir())
    r = client.post("/search", files=[_query(p) for p in paths], data={"k": "3"})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [q["query"] for q in results] == list(range(len(paths)))
    svc = setup["service"]
    for q, p in zip(results, paths):
        assert q["filename"] == p.name and len(q["hits"]) == 3
        top = q["hits"][0]
        assert svc.gallery.item(top["id"])["filename"] == p.name and top["distance"] < 1e-4 and top["rank"] == 1
        assert top["image_url"] == f"/gallery/{top['id']}/image"
        assert [h["distance"] for h in q["hits"]] == sorted(h["distance"] for h in q["hits"])
        for m in (q["masks"], top["masks"]):
            assert m["grid"] == [8, 4] and m["parts"] == list(svc.extractor.parts)
            assert m["colours"] == [list(get_part(p).colour) for p in m["parts"]]  # from the part records
            assert len(m["values"]) == len(m["parts"]) and all(len(v) == 32 and set(v) <= {0, 1} for v in m["values"])
        assert q["masks"] == top["masks"]  # the same image: the same predicted masks
    img = client.get(results[0]["hits"][0]["image_url"])
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg" and img.content == paths[0].read_bytes()
    nomask = client.post("/search", files=[_query(paths[0])], data={"masks": "false"}).json()["results"][0]
    assert nomask["masks"] is None and all(h["masks"] is None for h in nomask["hits"]) and len(nomask["hits"]) == 6


def test_camera_filters(setup, client):
    q = _query(sorted(setup["gallery"].iterdir())[0])  # camid 0
    kept = client.post("/search", files=[q], data={"k": "10", "cameras": "1"}).json()["results"][0]["hits"]
    assert len(kept) == 3 and {h["camid"] for h in kept} == {1}
    other = client.post("/search", files=[q], data={"k": "10", "exclude_camera": "0"}).json()["results"][0]["hits"]
    assert len(other) == 3 and {h["camid"] for h in other} == {1}
    both = client.post("/search", files=[q], data={"cameras": "0,1"}).json()["results"][0]["hits"]
    assert len(both) == 6


def test_add_delete_and_restart(setup, tmp_path):
    svc = open_service(setup["ckpt"], setup["gallery"], state=tmp_path / "state", progress=False)
    c = TestClient(create_app(svc))
    a, b = _jpeg(_image(901)), _jpeg(_image(902))
    r = c.post("/gallery", files=_files(("a.jpg", a, "image/jpeg"), ("b.jpg", b, "image/jpeg")), data={"pid": "99", "camid": "5"})
    assert r.status_code == 200, r.text
    id_a, id_b = r.json()["added"]
    hit = c.post("/search", files=_files(("qa.jpg", a, "image/jpeg")), data={"k": "1"}).json()["results"][0]["hits"][0]
    assert (hit["id"], hit["pid"], hit["camid"]) == (id_a, 99, 5) and hit["distance"] < 1e-4
    assert c.get(f"/gallery/{id_a}/image").content == a  # a gallery-owned copy
    assert c.delete(f"/gallery/{id_a}").json() == {"deleted": id_a}
    assert c.delete("/gallery/g0").json() == {"deleted": "g0"}
    assert c.delete(f"/gallery/{id_a}").status_code == 404
    assert c.get(f"/gallery/{id_a}/image").status_code == 404
    hits = c.post("/search", files=_files(("qa.jpg", a, "image/jpeg")), data={"k": "100"}).json()["results"][0]["hits"]
    assert {h["id"] for h in hits} == set(svc.gallery.ids) - {id_a, "g0"} and len(hits) == 6
    stats = c.get("/stats").json()
    assert stats["gallery_size"] == 6 and stats["requests"]["gallery_add"] == 1 and stats["requests"]["gallery_delete"] == 2

    again = open_service(setup["ckpt"], setup["gallery"], state=tmp_path / "state", progress=False)  # a restart
    c2 = TestClient(create_app(again))
    assert c2.get("/stats").json()["gallery_size"] == 6
    hits = c2.post("/search", files=_files(("qb.jpg", b, "image/jpeg")), data={"k": "100"}).json()["results"][0]["hits"]
    assert hits[0]["id"] == id_b and hits[0]["distance"] < 1e-4 and (hits[0]["pid"], hits[0]["camid"]) == (99, 5)
    assert {h["id"] for h in hits}.isdisjoint({id_a, "g0"})
    assert c2.get(f"/gallery/{id_b}/image").content == b
    assert not list((tmp_path / "state" / "changes" / "images").glob(f"{id_a}*"))  # the deleted copy is cleaned up


def test_a_crash_mid_write_loses_nothing_acknowledged(setup, tmp_path):
    svc = open_service(setup["ckpt"], setup["gallery"], state=tmp_path / "s", progress=False)
    c = TestClient(create_app(svc))
    added = c.post("/gallery", files=_files(("a.jpg", _jpeg(_image(7)), "image/jpeg")), data={"pid": "1", "camid": "0"}).json()["added"]
    changes = tmp_path / "s" / "changes"
    journal = changes / JOURNAL
    good = journal.read_bytes()
    # what kill -9 during an add can leave: the files of an unacknowledged add and a torn journal line
    (changes / "images" / "deadbeefdeadbeef.jpg").write_bytes(b"partial")
    (changes / "vectors" / "deadbeefdeadbeef.npz").write_bytes(b"partial")
    journal.write_bytes(good + b'{"op":"add","items":[{"id":"deadbeefdeadbeef"')
    g = Gallery(tmp_path / "s" / "features", changes)
    assert added[0] in g and "deadbeefdeadbeef" not in g and len(g) == 7
    assert journal.read_bytes() == good
    assert not (changes / "images" / "deadbeefdeadbeef.jpg").exists() and not (changes / "vectors" / "deadbeefdeadbeef.npz").exists()
    assert [json.loads(x)["op"] for x in good.splitlines()] == ["add"]


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes(setup, tmp_path, kind):
    svc = setup["service"]
    g = Gallery(setup["tmp"] / "state" / "features", tmp_path / "changes", index=kind)
    feats = svc.gallery.features[:6]
    hits = g.search(feats, 2)
    assert [row[0]["id"] for row in hits] == [f"g{i}" for i in range(6)]
    assert g.factory.startswith("IVF" if kind == "ivf" else "HNSW")


def _big_png(w, h) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def strict(setup):
    limits = Limits(max_file_bytes=60_000, max_request_bytes=200_000, max_pixels=1_000_000, max_batch=2, max_k=100)
    return TestClient(create_app(dataclasses.replace(setup["service"], limits=limits)))


GOOD = _jpeg(_image(1))
BAD_INPUTS = {
    "file too large": (413, {"files": _files(("x.png", os.urandom(70_000), "image/png"))}),
    "request too large": (413, {"files": _files(*[(f"{i}.jpg", os.urandom(50_000), "image/jpeg") for i in range(5)])}),
    "too many pixels": (413, {"files": _files(("big.png", _big_png(2000, 1000), "image/png"))}),
    "not an image": (400, {"files": _files(("x.jpg", b"this is not a jpeg at all" * 10, "image/jpeg"))}),
    "empty file": (400, {"files": _files(("x.jpg", b"", "image/jpeg"))}),
    "truncated": (400, {"files": _files(("t.jpg", GOOD[: len(GOOD) // 2], "image/jpeg"))}),
    "file part not an image type": (415, {"files": _files(("x.txt", GOOD, "text/plain"))}),
    "not multipart": (415, {"json": {"images": []}}),
    "k zero": (422, {"files": _files(("a.jpg", GOOD, "image/jpeg")), "data": {"k": "0"}}),
    "k too large": (422, {"files": _files(("a.jpg", GOOD, "image/jpeg")), "data": {"k": "101"}}),
    "k not a number": (422, {"files": _files(("a.jpg", GOOD, "image/jpeg")), "data": {"k": "ten"}}),
    "bad cameras": (422, {"files": _files(("a.jpg", GOOD, "image/jpeg")), "data": {"cameras": "1,x"}}),
    "bad masks": (422, {"files": _files(("a.jpg", GOOD, "image/jpeg")), "data": {"masks": "maybe"}}),
    "batch too large": (413, {"files": _files(*[(f"{i}.jpg", GOOD, "image/jpeg") for i in range(3)])}),
    "no images": (422, {"data": {"k": "3"}, "files": {"other": ("a.txt", b"x", "text/plain")}}),
    "images as text": (422, {"data": {"images": "a.jpg"}, "files": {"other": ("a.jpg", GOOD, "image/jpeg")}}),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_search_inputs_get_their_4xx(strict, case):
    status, kwargs = BAD_INPUTS[case]
    r = strict.post("/search", **kwargs)
    assert r.status_code == status, (case, r.text)
    body = r.json()
    assert set(body) == {"error"} and body["error"] and "Traceback" not in body["error"]


def test_good_request_passes_the_strict_limits(strict):
    assert strict.post("/search", files=_files(("a.jpg", GOOD, "image/jpeg"), ("b.jpg", GOOD, "application/octet-stream"))).status_code == 200


@pytest.mark.parametrize("method, url, kwargs, status", [
    ("post", "/gallery", {"files": _files(("a.jpg", GOOD, "image/jpeg")), "data": {"pid": "x", "camid": "0"}}, 422),
    ("post", "/gallery", {"files": _files(("a.jpg", GOOD, "image/jpeg")), "data": {"camid": "0"}}, 422),
    ("post", "/gallery", {"files": _files(("a.jpg", b"nope", "image/jpeg")), "data": {"pid": "1", "camid": "0"}}, 400),
    ("get", "/gallery/nope/image", {}, 404),
    ("get", "/gallery/..%2F..%2Fetc%2Fpasswd/image", {}, 404),
    ("delete", "/gallery/nope", {}, 404),
    ("get", "/no-such-endpoint", {}, 404),
    ("put", "/search", {}, 405),
])
def test_bad_gallery_requests(client, method, url, kwargs, status):
    r = getattr(client, method)(url, **kwargs)
    assert r.status_code == status and set(r.json()) == {"error"}, r.text


def test_token(setup, caplog):
    c = TestClient(create_app(dataclasses.replace(setup["service"], token=TOKEN)))
    q = _files(("a.jpg", GOOD, "image/jpeg"))
    with caplog.at_level(logging.DEBUG):
        assert c.get("/health").status_code == 200
        assert c.post("/search", files=q).status_code == 401
        assert c.post("/search", files=q, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/stats", headers={"Authorization": TOKEN}).status_code == 401  # not "Bearer ..."
        assert c.get(f"/stats?token={TOKEN}x").status_code == 401
        ok = c.post("/search", files=q, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        url = ok.json()["results"][0]["hits"][0]["image_url"]
        assert c.get(url).status_code == 401
        assert c.get(f"{url}?token={TOKEN}").status_code == 200
        c.cookies.set("muva_token", TOKEN)
        assert c.get("/stats").status_code == 200
    server = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))  # httpx: the client's own log
    assert '"POST /search" 401' in server and '"GET /stats" 200' in server  # the access lines are there ...
    assert TOKEN not in server  # ... without the token
    assert TOKEN in caplog.text  # (the check can fail: the client's own log line holds it)


def test_unexpected_errors_are_a_json_500(setup, caplog, monkeypatch):
    svc = dataclasses.replace(setup["service"])
    c = TestClient(create_app(svc), raise_server_exceptions=False)

    def broken(*a, **k):
        raise RuntimeError("internal detail /secret/path")

    monkeypatch.setattr(svc, "embed", broken)
    with caplog.at_level(logging.ERROR, logger="muva.serve"):
        r = c.post("/search", files=_files(("a.jpg", GOOD, "image/jpeg")))
    assert r.status_code == 500 and r.json() == {"error": "internal error (logged by the server)"}
    assert "internal detail" in caplog.text


def test_index_page_when_present(client):
    r = client.get("/")
    if (STATIC / "index.html").is_file():
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    else:
        assert r.status_code == 404 and set(r.json()) == {"error"}


@pytest.mark.parametrize("args, message", [
    (["--host", "0.0.0.0"], "--token"),
    (["--host", "192.168.1.5", "--token", " "], "--token is empty"),
    (["--index", "lsh"], "--index"),
])
def test_cli_refuses_before_starting(tmp_path, args, message):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "300"}  # rich wraps at the terminal width
    env.pop("MUVA_SERVE_TOKEN", None)
    r = subprocess.run([sys.executable, "-m", "muva", "serve", "--model", str(tmp_path / "m.safetensors"),
                        "--gallery", str(tmp_path), *args], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr, r.stderr
