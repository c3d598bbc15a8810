"""The HTTP API of ``muva serve`` (FastAPI): ``create_app(service)``.

Endpoints (JSON; errors are ``{"error": message}`` with a 4xx status, unexpected ones a 500
without internals, logged here):

* ``GET /health`` → ``{"status": "ok"}`` (no token needed)
* ``GET /stats`` → gallery size, index, model, request counts, search latency, limits
* ``POST /search`` (multipart: ``images`` files, ``k``, ``cameras``, ``exclude_camera``, ``masks``)
* ``GET /gallery/{id}/image`` → the image bytes (only by gallery id, never by a path)
* ``POST /gallery`` (multipart: ``images`` files, ``pid``, ``camid``) → ``{"added": [ids]}``
* ``DELETE /gallery/{id}`` → ``{"deleted": id}``
* ``GET /`` → ``static/index.html`` when present; ``/static`` serves that folder; ``/docs`` OpenAPI

Token (when the service has one): ``Authorization: Bearer TOKEN``, or ``?token=TOKEN`` (for
``<img src>`` URLs, which cannot send headers), or the cookie ``muva_token``; compared with
:func:`hmac.compare_digest`.  ``/health``, ``/``, ``/static/*``, ``/docs`` and
``/openapi.json`` need none (they hold no gallery data).  Access lines are logged here
(logger ``muva.serve.access``) with the path only — never the query string or headers,
so the token never reaches a log; uvicorn's own access log is turned off by ``muva serve``.
"""

from __future__ import annotations

import hmac
import io
import logging
import mimetypes
import time
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from PIL import Image
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from muva.serve.limits import RequestError, decode_image
from muva.serve.service import Service

__all__ = ["create_app", "STATIC"]

log = logging.getLogger("muva.serve")
access = logging.getLogger("muva.serve.access")
STATIC = Path(__file__).resolve().parent / "static"
OPEN_PATHS = ("/health", "/", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/favicon.ico")
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif"}
COUNTED = {("POST", "/search"): "search", ("POST", "/gallery"): "gallery_add", ("DELETE", "gallery"): "gallery_delete"}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _multipart_form(schema: dict) -> dict:
    """OpenAPI ``requestBody`` of a multipart form (the endpoints parse the form themselves)."""
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {"type": "object", **schema}}}}}


class Guard:
    """ASGI middleware: token check, request-size cap, access log, counters, and a last-resort 500."""

    def __init__(self, app, service: Service):
        self.app = app
        self.service = service

    def _authorised(self, scope) -> bool:
        token = self.service.token
        path = scope["path"]
        if not token or path in OPEN_PATHS or path.startswith("/static/"):
            return True
        want = token.encode()
        headers = dict(scope.get("headers") or [])
        given: list[bytes] = []
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            given.append(auth[7:].strip())
        given += [v.encode() for v in parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])]
        for part in headers.get(b"cookie", b"").split(b";"):
            name, _, value = part.strip().partition(b"=")
            if name == b"muva_token":
                given.append(value)
        ok = False
        for g in given:
            ok |= hmac.compare_digest(g, want)
        return ok

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = {"code": 0}
        limit = self.service.limits.max_request_bytes

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        async def respond(resp):
            await resp(scope, receive, sending)

        try:
            if not self._authorised(scope):
                await respond(JSONResponse({"error": "missing or wrong token (send Authorization: Bearer TOKEN)"},
                                           status_code=401, headers={"WWW-Authenticate": "Bearer"}))
                return
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                await respond(_error(413, f"request body of {int(length):,} bytes; at most {limit:,}"))
                return
            seen = {"n": 0}

            async def receiving():
                message = await receive()
                if message["type"] == "http.request":
                    seen["n"] += len(message.get("body", b""))
                    if seen["n"] > limit:
                        raise RequestError(413, f"request body over {limit:,} bytes")
                return message

            await self.app(scope, receiving, sending)
        except Exception as exc:  # noqa: BLE001 - the last resort: no traceback ever reaches a client
            if status["code"]:
                log.exception("error after the response started (%s %s)", scope["method"], scope["path"])
                return
            if isinstance(exc, RequestError):
                await respond(_error(exc.status, str(exc)))
            else:
                log.exception("internal error in %s %s", scope["method"], scope["path"])
                await respond(_error(500, "internal error (logged by the server)"))
        finally:
            code = status["code"]
            if 400 <= code < 500:
                self.service.counts["errors_4xx"] += 1
            key = COUNTED.get((scope["method"], scope["path"]))
            if key is None and scope["method"] == "DELETE" and scope["path"].startswith("/gallery/"):
                key = "gallery_delete"
            if key and 200 <= code < 300:
                self.service.counts[key] += 1
            client = (scope.get("client") or ("-", 0))[0]
            access.info('%s "%s %s" %d %.1fms', client, scope["method"], scope["path"], code, 1000 * (time.perf_counter() - t0))


async def _read_form(request: Request, service: Service):
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise RequestError(415, f"send multipart/form-data, not {ctype.split(';')[0] or 'no content type'!r}")
    try:
        form = await request.form(max_files=1000, max_fields=100)
    except StarletteHTTPException as exc:
        raise RequestError(400, f"malformed multipart form: {exc.detail}") from None
    files = form.getlist("images")
    if any(not isinstance(f, UploadFile) for f in files):
        raise RequestError(422, "the form field 'images' must hold files")
    service.limits.check_batch(len(files))
    data = []
    for f in files:
        name = Path(f.filename or "upload").name
        size = f.size if f.size is not None else 0
        service.limits.check_part(name, f.content_type, size)
        raw = await f.read(service.limits.max_file_bytes + 1)
        service.limits.check_part(name, f.content_type, len(raw))
        data.append((name, raw))
    return form, data


def _bool_field(value, name: str) -> bool:
    text = str(value if value is not None else "true").strip().lower()
    if text in ("true", "1", "yes", "on", ""):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise RequestError(422, f"{name} must be true or false, not {value!r}")


def create_app(service: Service) -> FastAPI:
    """The FastAPI app over a :class:`~muva.serve.service.Service`."""
    app = FastAPI(title="muva serve", description="Person search over a gallery (muva re-identification).")
    limits = service.limits

    @app.exception_handler(RequestError)
    async def _request_error(request, exc: RequestError):
        return _error(exc.status, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        return _error(422, f"{'.'.join(map(str, first.get('loc', [])))}: {first.get('msg', 'invalid request')}")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/stats")
    async def stats():
        return service.stats()

    @app.post("/search", openapi_extra=_multipart_form({"required": ["images"], "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "k": {"type": "integer", "default": 10, "minimum": 1, "maximum": limits.max_k},
        "cameras": {"type": "string", "description": "comma-separated camera ids to keep"},
        "exclude_camera": {"type": "integer", "description": "drop hits from this camera"},
        "masks": {"type": "boolean", "default": True}}}))
    async def search(request: Request):
        t0 = time.perf_counter()
        form, files = await _read_form(request, service)
        k = limits.check_k(form.get("k"))
        cameras = None
        if (form.get("cameras") or "").strip():
            try:
                cameras = {int(c) for c in str(form.get("cameras")).split(",") if c.strip()}
            except ValueError:
                raise RequestError(422, f"cameras must be comma-separated integers, not {form.get('cameras')!r}") from None
        exclude = None if not (form.get("exclude_camera") or "").strip() else limits.int_field("exclude_camera", form.get("exclude_camera"))
        want_masks = _bool_field(form.get("masks"), "masks")

        def work():
            images = [decode_image(raw, name, limits) for name, raw in files]
            feats, qmasks = service.embed(images, masks=want_masks)
            hits = service.gallery.search(feats, k, cameras=cameras, exclude_camera=exclude)
            gmasks = service.gallery_masks([h["id"] for row in hits for h in row]) if want_masks else {}
            results = []
            for qi, (name, _) in enumerate(files):
                results.append({
                    "query": qi,
                    "filename": name,
                    "masks": service.masks_json(qmasks[qi]) if qmasks is not None else None,
                    "hits": [{"rank": r + 1, "id": h["id"], "pid": int(h["pid"]), "camid": int(h["camid"]),
                              "distance": round(float(h["distance"]), 6), "image_url": f"/gallery/{h['id']}/image",
                              "masks": service.masks_json(gmasks.get(h["id"]))} for r, h in enumerate(hits[qi])],
                })
            return results

        results = await run_in_threadpool(work)
        service.record_search(time.perf_counter() - t0)
        return {"results": results}

    @app.get("/gallery/{gid}/image")
    async def gallery_image(gid: str):
        if gid not in service.gallery:
            raise RequestError(404, f"no gallery item {gid!r}")
        path = Path(service.gallery.item(gid)["path"])
        if not path.is_file():
            raise RequestError(404, f"the image of gallery item {gid!r} is gone from disk")
        return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream")

    @app.post("/gallery", openapi_extra=_multipart_form({"required": ["images", "pid", "camid"], "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "pid": {"type": "integer"}, "camid": {"type": "integer"}}}))
    async def gallery_add(request: Request):
        form, files = await _read_form(request, service)
        pid = limits.int_field("pid", form.get("pid"))
        camid = limits.int_field("camid", form.get("camid"))

        def work():
            images = [decode_image(raw, name, limits) for name, raw in files]
            feats, masks = service.embed(images, masks=True)
            items = [{"data": raw, "ext": _ext(raw), "filename": name, "pid": pid, "camid": camid} for name, raw in files]
            return service.gallery.add(items, feats, masks)

        return {"added": await run_in_threadpool(work)}

    @app.delete("/gallery/{gid}")
    async def gallery_delete(gid: str):
        try:
            await run_in_threadpool(service.gallery.delete, gid)
        except KeyError:
            raise RequestError(404, f"no gallery item {gid!r}") from None
        return {"deleted": gid}

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index_page():
        page = STATIC / "index.html"
        if not page.is_file():
            raise RequestError(404, "no web page installed (muva/serve/static/index.html); the API is at /docs")
        return FileResponse(page, media_type="text/html")

    app.add_middleware(Guard, service=service)
    return app


def _ext(raw: bytes) -> str:
    """The file extension of an already validated image's bytes (its format from the header)."""
    with Image.open(io.BytesIO(raw)) as im:
        return EXTENSIONS.get(im.format or "", ".img")
