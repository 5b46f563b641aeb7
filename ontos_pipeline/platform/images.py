"""Image cells: a file path, or the image itself inline (a `data:image/...;base64,` URL or bare base64).

Every reader of an image column (the trainer's pixels, request validation, `ontos data load`) goes through
`image_bytes`/`open_image`, so a path and inline content behave the same everywhere.

Tables, prompts and logs keep the path of a file under the lakehouse's files folder (`lakehouse.volume_path()`)
relative to that folder (`relative_cell`), so a copied `ONTOS_HOME` (or the same volume on another cluster) still
finds its images; readers resolve a relative path under that root (`resolve_cell`, or `root=` below). Absolute
paths elsewhere and inline content are kept as they are.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import stat
import uuid
from collections.abc import Sequence
from pathlib import Path

_DATA_URL = re.compile(r"^data:image/[A-Za-z0-9.+-]+;base64,", re.ASCII)
_BASE64 = re.compile(r"^[A-Za-z0-9+/\s]+={0,2}$", re.ASCII)
MIN_INLINE_CHARS = 64  # shorter strings are paths, never base64 content


class ImageError(ValueError):
    """An image cell cannot be read; the message says why (no file, not base64, not an image)."""


# how the encoded formats Pillow reads begin: bare base64 counts as inline content only when it decodes to one
_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")


def looks_inline(value: str) -> bool:
    """True for a data URL or a long base64-looking string, image or not (what a log should not keep in full)."""
    return bool(_DATA_URL.match(value)) or (len(value) >= MIN_INLINE_CHARS and bool(_BASE64.match(value)))


def is_inline(value: str) -> bool:
    """True when the cell holds the image itself rather than a path: a data URL, or bare base64 of an image
    (a long path made only of letters, digits and slashes stays a path)."""
    if _DATA_URL.match(value):
        return True
    if len(value) < MIN_INLINE_CHARS or not _BASE64.match(value):
        return False
    try:
        head = base64.b64decode("".join(value[:64].split())[:16])
    except (binascii.Error, ValueError):
        return False
    return head.startswith(_SIGNATURES)


def relative_cell(path: Path | str, root: Path | str) -> str:
    """The cell that names the file `path`: relative to `root` (POSIX separators) when it lies under it, else the
    absolute path."""
    path, root = Path(path).resolve(), Path(root).resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def resolve_cell(value: object, root: Path | str | None) -> object:
    """A cell as a reader on this machine opens it: a relative path joined to `root`; inline content, absolute
    paths, nulls and non-strings unchanged."""
    if root is None or not isinstance(value, str) or not value or is_inline(value) or Path(value).is_absolute():
        return value
    return str(Path(root) / value)


def served_file(value: str, root: Path | str | None, allowed: Sequence[Path | str]) -> Path:
    """The regular file an image path of a request names, refused (ImageError) unless it lies, symlinks resolved,
    under one of the `allowed` folders: a client must not make the server open /etc/passwd or block on a FIFO."""
    path = Path(resolve_cell(value, root)).resolve()
    folders = [Path(a).resolve() for a in allowed]
    not_an_image = ImageError("inline content is not a readable image (not a known image format)")
    if not any(path.is_relative_to(f) for f in folders):
        if looks_inline(value):  # base64 of no format we read, not a path: never opened
            raise not_an_image
        raise ImageError(
            f"{value!r} is outside the folders this server reads images from ({', '.join(map(str, folders))}); "
            "send the image inline or put the file under one of them (ONTOS_SERVE_IMAGE_ROOTS adds folders)"
        )
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise (not_an_image if looks_inline(value) else ImageError(f"no image file at {value!r}")) from None
    except OSError as exc:
        raise ImageError(f"cannot read {value!r} ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise ImageError(f"{value!r} is not a regular file")
    return path


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
    path = Path(resolve_cell(value, root))
    try:
        return path.read_bytes()
    except FileNotFoundError:
        if looks_inline(value):  # base64, but not of an image format we read
            raise ImageError("inline content is not a readable image (not a known image format)") from None
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


def store_image(data: bytes, folder: Path | str, suffix: str) -> Path:
    """Keep encoded image bytes once by content: `<folder>/<sha256[:2]>/<sha256><suffix>`, written to a temporary
    file and renamed (readers see the whole file or none; concurrent writers write the same bytes)."""
    digest = hashlib.sha256(data).hexdigest()
    path = Path(folder) / digest[:2] / f"{digest}{suffix}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        partial.write_bytes(data)
        os.replace(partial, path)
    return path


# -- item frames: the cell for prompts and logs, the readable file for the features ---------------------------------
IMAGE_FILE = "__image_file__"  # prefix of the column holding the resolved file of an image column


def image_file_column(name: str) -> str:
    """The hidden column next to image column `name` with its cells resolved for reading on this machine: models
    read pixels from it when present, while prompts (rendered from `name`) keep the relative cell."""
    return f"{IMAGE_FILE}{name}"


def with_image_files(frame, columns, root: Path | str):
    """The pandas frame `frame` plus `image_file_column(c)` (`resolve_cell` under `root`) for each of `columns`."""
    base = str(root)
    return frame.assign(**{image_file_column(c): [resolve_cell(v, base) for v in frame[c]] for c in columns})


def with_image_files_spark(df, columns, root: Path | str):
    """`with_image_files` for a Spark DataFrame (resolved on the executors, in a pandas UDF)."""
    from pyspark.sql import functions as F

    if not columns:
        return df
    base = str(root)

    def resolve(cells):
        return cells.map(lambda v: resolve_cell(v, base))

    udf = F.pandas_udf(resolve, "string")
    return df.withColumns({image_file_column(c): udf(F.col(c)) for c in columns})
