"""Input limits of ``muva serve``: upload sizes, pixel counts, batch size, ``k`` — checked before decoding.

Every violation is a :class:`RequestError` with an HTTP status and a one-line message; the
app turns it into ``{"error": message}`` with that status (never a 500, never a traceback).

Status codes: 400 a file that is not a readable image (not an image, truncated, an
unsupported format); 413 too large (a file, a request, too many pixels, too many images);
415 a wrong content type (a request that is not ``multipart/form-data``, a file part that
declares a non-image type); 422 a bad form value (``k`` out of range, a ``pid`` that is not
an integer, no images); 401 a missing or wrong token; 404 an unknown gallery id.

>>> Limits().check_k("5")
5
>>> Limits(max_k=100).check_k("101")
Traceback (most recent call last):
...
muva.serve.limits.RequestError: k must be an integer between 1 and 100, not '101'
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass

from PIL import Image

from muva.utils.errors import MuvaError

__all__ = ["Limits", "RequestError", "decode_image", "IMAGE_FORMATS"]

# Formats PIL may decode (``Image.open(..., formats=...)``): no exotic decoders on uploads.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
# Declared part types accepted besides image/*: clients that do not know the type (curl with
# an unknown extension, some scripts) send application/octet-stream; decoding decides then.
GENERIC_TYPES = ("application/octet-stream", "")


class RequestError(MuvaError, ValueError):
    """A request the service refuses, with its HTTP status code."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = int(status)


@dataclass
class Limits:
    """Bounds on what one request may send (the CLI's ``--max-*`` options)."""

    max_file_bytes: int = 10 * 2**20  # one uploaded image
    max_request_bytes: int = 64 * 2**20  # a whole request body
    max_pixels: int = 40_000_000  # width × height, read from the header before decoding
    max_batch: int = 16  # images per request
    max_k: int = 100  # results per query

    def as_dict(self) -> dict:
        return asdict(self)

    def check_k(self, value) -> int:
        return self.int_field("k", value, 1, self.max_k, default=10)

    def int_field(self, name: str, value, lo: int | None = None, hi: int | None = None, *, default: int | None = None) -> int:
        """A form value as an int within ``[lo, hi]`` (422 otherwise)."""
        if value is None or (isinstance(value, str) and value.strip() == ""):
            if default is None:
                raise RequestError(422, f"form field {name!r} is required")
            return default
        if not isinstance(value, str):
            raise RequestError(422, f"form field {name!r} must be a value, not a file")
        try:
            out = int(value.strip())
        except ValueError:
            out = None
        if out is None or (lo is not None and out < lo) or (hi is not None and out > hi):
            if lo is not None and hi is not None:
                raise RequestError(422, f"{name} must be an integer between {lo} and {hi}, not {value!r}")
            raise RequestError(422, f"{name} must be an integer, not {value!r}")
        return out

    def check_batch(self, n: int) -> None:
        if n == 0:
            raise RequestError(422, "no images: send one or more files in the form field 'images'")
        if n > self.max_batch:
            raise RequestError(413, f"{n} images in one request; at most {self.max_batch}")

    def check_part(self, filename: str, content_type: str | None, size: int) -> None:
        """The declared type and size of one uploaded file."""
        ctype = (content_type or "").split(";")[0].strip().lower()
        if not (ctype.startswith("image/") or ctype in GENERIC_TYPES):
            raise RequestError(415, f"{filename!r} is sent as {ctype!r}; send images (image/jpeg, image/png, ...)")
        if size > self.max_file_bytes:
            raise RequestError(413, f"{filename!r} is {size:,} bytes; at most {self.max_file_bytes:,} per image")


def decode_image(data: bytes, filename: str, limits: Limits) -> Image.Image:
    """An uploaded file as an RGB PIL image; pixel count checked from the header before decoding."""
    if not data:
        raise RequestError(400, f"{filename!r} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RequestError(413, f"{filename!r} has too many pixels; at most {limits.max_pixels:,}") from None
    except Exception:  # noqa: BLE001 - PIL raises many kinds for bytes that are not an image
        raise RequestError(400, f"{filename!r} is not a readable image ({', '.join(IMAGE_FORMATS)})") from None
    w, h = im.size
    if w * h > limits.max_pixels:
        raise RequestError(413, f"{filename!r} is {w}×{h} = {w * h:,} pixels; at most {limits.max_pixels:,}")
    if w == 0 or h == 0:
        raise RequestError(400, f"{filename!r} has no pixels")
    try:
        im.load()  # raises on truncated data (ImageFile.LOAD_TRUNCATED_IMAGES is left False)
        return im.convert("RGB")
    except Exception:  # noqa: BLE001 - truncated / corrupt streams raise OSError, SyntaxError, ValueError, ...
        raise RequestError(400, f"{filename!r} is truncated or corrupt") from None
