"""Inline request images (data URLs or bare base64) kept once by content, so the inference log holds a reference.

A served request's inline image cell is decoded, written to `<folder>/<sha256[:2]>/<sha256>.<format>` (the folder is
under the lakehouse files folder) unless that file exists, and replaced by the file's path: in the records the model
answers (so its prompt and pixels come from the same image) and in the logged `inputs` (so monitoring reads the image
back like any path). A request refused by validation keeps no image: its logged cells say only how long the content
was. Kept files are never deleted by the serving process (they are the evidence behind logged rows).
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from ontos_pipeline.platform.images import image_bytes, is_inline, looks_inline, relative_cell, store_image
from ontos_pipeline.platform.invocations import BadRequest, parse_json, records_of


def not_kept(value: str) -> str:
    """What the log keeps of an inline image of a request that was not answered."""
    return f"inline image ({len(value)} characters) not kept: the request was not answered"


def redacted(records: Sequence[dict], columns: Iterable[str]) -> list[dict]:
    """Copies of `records` with every inline image cell of `columns` replaced by a short note (`not_kept`)."""
    names = list(columns)
    return [{k: not_kept(v) if k in names and _looks_inline(v) else v for k, v in r.items()} for r in records]


def loggable(body: str, columns: Iterable[str]) -> str:
    """A request body as the log keeps it before it is answered: its records with inline images redacted, or the
    body as sent when it holds no records."""
    try:
        records = records_of(parse_json(body.encode()), sys.maxsize)
    except BadRequest:
        return body
    return json.dumps(redacted(records, columns), ensure_ascii=False, default=str)


class ImageStore:
    """Content-addressed image files in one folder under the files root; `put` returns the cell naming an inline
    image's kept file (its path relative to `root`, as tables keep it)."""

    def __init__(self, folder: Path | str, root: Path | str):
        self.folder, self.root = Path(folder), Path(root)

    def put(self, value: str) -> str:
        """Decode an inline cell and keep it (once per distinct content); returns the kept file's cell."""
        from PIL import Image

        data = image_bytes(value)
        with Image.open(io.BytesIO(data)) as image:  # the header only: the format names the file
            suffix = (image.format or "img").lower()
        return relative_cell(store_image(data, self.folder, f".{suffix}"), self.root)

    def keep(self, rows: Sequence[dict], columns: Iterable[str], paths: dict[str, str] | None = None) -> list[dict]:
        """Copies of `rows` with every inline image cell of `columns` replaced by its kept file's path; `paths`
        (inline value -> path) is shared between calls on the same request so each image is decoded once."""
        names, paths = list(columns), {} if paths is None else paths
        out = []
        for row in rows:
            copy = dict(row)
            for name in names:
                value = copy.get(name)
                if _inline(value):
                    if value not in paths:
                        paths[value] = self.put(value)
                    copy[name] = paths[value]
            out.append(copy)
        return out


def _inline(value: object) -> bool:
    return isinstance(value, str) and is_inline(value)


def _looks_inline(value: object) -> bool:
    return isinstance(value, str) and looks_inline(value)
