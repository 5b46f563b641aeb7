"""Request records are checked against the spec's columns before any model sees them (platform.invocations)."""

from __future__ import annotations

import pytest
from PIL import Image

from ontos_pipeline.platform.invocations import BadRequest, validate_records
from ontos_pipeline.specs import ColumnRef, ColumnSpec

PHOTO = ColumnSpec("photo", ColumnRef("widgets", "photo"), "string", "image")


def test_an_image_column_must_name_a_readable_image_file(tmp_path):
    good = tmp_path / "ok.png"
    Image.new("RGB", (4, 4), (200, 10, 10)).save(good)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert validate_records([{"photo": str(good)}], ["photo"], {"photo": PHOTO}) == [{"photo": str(good)}]
    assert validate_records([{"photo": None}], ["photo"], {"photo": PHOTO}) == [{"photo": None}]  # nullable
    with pytest.raises(BadRequest) as missing:
        validate_records([{"photo": str(good)}, {"photo": str(tmp_path / "gone.png")}], ["photo"], {"photo": PHOTO})
    assert missing.value.status == 400
    assert (
        missing.value.message == f"record 1: column 'photo': no image file at '{tmp_path / 'gone.png'}' on the "
        "serving host"
    )
    with pytest.raises(BadRequest, match=r"record 0: column 'photo': '.*broken.png' is not a readable image"):
        validate_records([{"photo": str(broken)}], ["photo"], {"photo": PHOTO})
