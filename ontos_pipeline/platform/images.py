"""Image cells: a file path, or the image itself inline (a `data:image/...;base64,` URL or bare base64).

Every reader of an image column (the trainer's pixels, request validation, `ontos data load`) goes through
`image_bytes`/`open_image`, so a path and inline content behave the same everywhere. A relative path is read under
`root` (the lakehouse's files folder) when one is given.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from pathlib import Path

_DATA_URL = re.compile(r"^data:image/[A-Za-z0-9.+-]+;base64,", re.ASCII)
_BASE64 = re.compile(r"^[A-Za-z0-9+/\s]+={0,2}$", re.ASCII)
MIN_INLINE_CHARS = 64  # shorter strings are paths, never base64 content


class ImageError(ValueError):
    """An image cell cannot be read; the message says why (no file, not base64, not an image)."""


def is_inline(value: str) -> bool:
    """True when the cell holds the image itself rather than a path."""
    return bool(_DATA_URL.match(value)) or (len(value) >= MIN_INLINE_CHARS and bool(_BASE64.match(value)))


def image_bytes(value: str, root: Path | str | None = None) -> bytes:
    """The encoded image a cell holds or points at."""
    if not isinstance(value, str) or not value:
        raise ImageError(f"expected a path or base64 image content, got {type(value).__name__}")
    if is_inline(value):
        payload = value[_DATA_URL.match(value).end() :] if value.startswith("data:") else value
        try:
            return base64.b64decode("".join(payload.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ImageError(f"inline image content is not valid base64 ({exc})") from None
    path = Path(value)
    if not path.is_absolute() and root is not None:
        path = Path(root) / path
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"no image file at {value!r}") from None
    except OSError as exc:
        raise ImageError(f"cannot read {value!r} ({exc.strerror})") from None


def open_image(value: str, root: Path | str | None = None):
    """The decoded image (PIL, fully loaded) of a cell; ImageError when it is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    data = image_bytes(value, root)
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        what = "inline content" if is_inline(value) else repr(value)
        why = "not a known image format" if isinstance(exc, UnidentifiedImageError) else f"{type(exc).__name__}: {exc}"
        raise ImageError(f"{what} is not a readable image ({why})") from None
    return image
