"""The ``muva serve`` page in a real headless Chromium (Playwright for Python, system browser).

One crop of a small drawn-person gallery is uploaded through the page; the test reads the
ranked list (the first hit is the query's own gallery copy), pages through the hits, turns
a part-mask overlay on and off (reading the canvas pixels), filters by camera, checks that
a server error reaches the message area, and saves a screenshot (``tmp_path``, and the path
in ``MUVA_DOCS_SCREENSHOT`` when set: that is how ``docs/img/serve_page.png`` is made).

Needs: ``pip install playwright`` (the Python package only, no ``playwright install``) and
a Chromium binary on PATH (``apt-get install chromium``); skipped with a reason otherwise.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from _helpers import tiny_checkpoint

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
TOKEN = "browser-test-token"


# ----------------------------------------------------------------------------- browser
@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("headless Chromium not found: apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed: pip install playwright")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        except Exception as e:  # noqa: BLE001 - a Chromium that Playwright cannot drive
            pytest.skip(f"Playwright cannot start {CHROMIUM}: {str(e).splitlines()[0]}")
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


# ----------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(app):
    """Run an ASGI app with uvicorn on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def synth_gallery(tmp_path_factory) -> Path:
    """A small drawn-person gallery (Market layout names, 3 cameras): never real people."""
    from muva.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth")
    cfg = SynthConfig(num_domains=1, ids_per_domain=2, test_ids_per_domain=6, images_per_id=2, gallery_per_id=3,
                      distractors_per_domain=0, num_cameras=3, width=64, height=128)
    generate(cfg, out)
    return out / "domain_0" / "bounding_box_test"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", seed=None)


def make_app(model: Path, gallery: Path, state: Path, token: str | None = None):
    """The real service app (``muva.serve.app.create_app``); skipped while the core is absent."""
    try:
        from muva.serve.app import create_app
    except ImportError as e:
        pytest.skip(f"service core not available yet (muva.serve.app.create_app: {e})")
    params = inspect.signature(create_app).parameters
    if "service" in params or len(params) == 1:  # create_app(service): open it first
        from muva.serve.service import open_service

        return create_app(open_service(model, gallery, state=state, token=token, progress=False))
    if token is not None and "token" not in params:
        pytest.skip("create_app takes no token")
    kwargs = {"model": model, "gallery": gallery, "state": state, "token": token, "progress": False}
    return create_app(**{k: v for k, v in kwargs.items() if k in params})


# ----------------------------------------------------------------------------- the page, driven
COUNT_PIXELS = """(sel) => {
  const c = document.querySelector(sel);
  if (!c || !c.width) return {painted: -1};
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let painted = 0, r = 0, g = 0, b = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0) { painted++; r += d[i]; g += d[i + 1]; b += d[i + 2]; }
  return {painted, mean: painted ? [r / painted, g / painted, b / painted] : null};
}"""


def search(page, files, *, k=None, cameras="", exclude=""):
    page.set_input_files("#images", [str(f) for f in files])
    if k is not None:
        page.fill("#k", str(k))
    page.fill("#cameras", cameras)
    page.fill("#exclude-camera", str(exclude))
    with page.expect_response(lambda r: r.url.endswith("/search")):
        page.click("#search")
    page.wait_for_function("() => !document.querySelector('#results').hasAttribute('aria-busy')")


def hits(page) -> list[dict]:
    return page.eval_on_selector_all(
        "#results .query:first-child li.hit",
        "els => els.map(e => ({id: e.dataset.id, pid: +e.dataset.pid, camid: +e.dataset.camid,"
        " rank: +e.querySelector('.rank').textContent, distance: +e.querySelector('.distance').textContent}))")


def drive(page, base: str, gallery: Path, shots: list[Path], token: str | None = None) -> None:
    """The whole browser scenario against a running service at ``base`` serving ``gallery``."""
    files = sorted(gallery.glob("*.jpg"))
    query = files[len(files) // 2]
    from muva.inference.extract import parse_identity

    q_pid, q_cam = parse_identity(query.name)  # the ids the service gives (Market "c1" is camera 0)
    cams = sorted({parse_identity(f.name)[1] for f in files})

    page.goto(base + "/" + (f"#token={token}" if token else ""))
    page.wait_for_function("() => /Gallery: \\d+/.test(document.querySelector('#status').textContent)")
    if token:
        assert "token" not in page.url, "the token stays in the address bar"
        assert page.evaluate("sessionStorage.getItem('muva-token')") == token

    # ranked list; the first hit is the query's own gallery copy
    search(page, [query], k=15)
    first = hits(page)
    assert first, page.inner_text("#results")
    assert [h["rank"] for h in first] == list(range(1, 11)), "page 1 holds ranks 1-10"
    assert (first[0]["pid"], first[0]["camid"]) == (q_pid, q_cam)
    assert first[0]["distance"] < 1e-3
    assert [h["distance"] for h in first] == sorted(h["distance"] for h in first)
    page.wait_for_function("() => [...document.querySelectorAll('li.hit img')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.evaluate("[...document.querySelectorAll('img')].every(i => !i.src.includes('token'))")

    # paging: ranks 11-15 on page 2, back to page 1
    page.click("#results .query .next")
    assert [h["rank"] for h in hits(page)] == list(range(11, 16))
    page.click("#results .query .prev")
    assert hits(page)[0]["rank"] == 1

    # part overlays: nothing drawn while off, the part colour when on, nothing again when off
    q_canvas = "#results .query-thumb canvas"
    page.wait_for_function("() => document.querySelector('#results .query-thumb img').complete")
    assert page.evaluate(COUNT_PIXELS, q_canvas)["painted"] == 0
    page.check("#part-upper_body")
    on = page.evaluate(COUNT_PIXELS, q_canvas)
    hit_on = page.evaluate(COUNT_PIXELS, "#results li.hit canvas")
    if on["painted"] == 0 and hit_on["painted"] == 0:  # the model may predict no upper body here: try every part
        for name in ("head", "legs"):
            page.check(f"#part-{name}")
        on = page.evaluate(COUNT_PIXELS, q_canvas)
        hit_on = page.evaluate(COUNT_PIXELS, "#results li.hit canvas")
    assert on["painted"] > 0 or hit_on["painted"] > 0, "no overlay pixels after turning the parts on"
    blue = on if on["painted"] else hit_on
    if page.is_checked("#part-upper_body") and not page.is_checked("#part-head"):
        r, g, b = blue["mean"]
        assert b > r and b > g, f"upper body overlay is not blue: {blue['mean']}"
    for name in ("head", "upper_body", "legs"):
        page.check(f"#part-{name}")
    for shot in shots:  # the picture of the docs: overlays on, page 1
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=False)
    for name in ("head", "upper_body", "legs"):
        page.uncheck(f"#part-{name}")
    assert page.evaluate(COUNT_PIXELS, q_canvas)["painted"] == 0
    assert page.evaluate(COUNT_PIXELS, "#results li.hit canvas")["painted"] == 0

    # camera filter: only hits from the kept camera; excluding the query camera drops it
    other = next(c for c in cams if c != q_cam)
    search(page, [query], k=10, cameras=str(other))
    kept = hits(page)
    assert kept and {h["camid"] for h in kept} == {other}
    search(page, [query], k=10, exclude=q_cam)
    assert q_cam not in {h["camid"] for h in hits(page)}

    # a server error is shown, never swallowed
    bad = shots[0].parent / "not_an_image.jpg"
    bad.write_bytes(b"this is not a picture")
    search(page, [bad], k=5)
    msg = page.locator("#message")
    assert msg.is_visible() and "HTTP 4" in msg.inner_text(), msg.inner_text()


# ----------------------------------------------------------------------------- tests
def _shots(tmp_path: Path) -> list[Path]:
    shots = [tmp_path / "serve_page.png"]
    if os.environ.get("MUVA_DOCS_SCREENSHOT"):
        shots.append(Path(os.environ["MUVA_DOCS_SCREENSHOT"]))
    return shots


def test_page_search_masks_paging_and_camera_filter(page, tiny_model, synth_gallery, tmp_path):
    app = make_app(tiny_model, synth_gallery, tmp_path / "state")
    with serve(app) as base:
        drive(page, base, synth_gallery, _shots(tmp_path))
    assert (tmp_path / "serve_page.png").stat().st_size > 10_000


def test_page_with_token(page, tiny_model, synth_gallery, tmp_path):
    app = make_app(tiny_model, synth_gallery, tmp_path / "state", token=TOKEN)
    with serve(app) as base:
        import httpx

        assert httpx.get(base + "/stats").status_code == 401
        drive(page, base, synth_gallery, [tmp_path / "token.png"], token=TOKEN)
