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


def test_an_image_column_may_carry_the_image_inline(tmp_path):
    import base64
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (6, 5), (10, 200, 10)).save(buffer, "PNG")
    content = base64.b64encode(buffer.getvalue()).decode()
    url = f"data:image/png;base64,{content}"
    split = "\n".join(content[i : i + 76] for i in range(0, len(content), 76))  # MIME line breaks are allowed
    records = [{"photo": url}, {"photo": content}, {"photo": split}]
    assert validate_records(records, ["photo"], {"photo": PHOTO}) == records
    text = base64.b64encode(b"plain text, no image here at all; " * 3).decode()
    cases = {
        "data:image/png;base64,%%%not-base64%%%": "record 1: column 'photo': inline image content is not valid base64",
        text: "record 1: column 'photo': inline content is not a readable image",
        "data:image/png;base64,": "record 1: column 'photo': inline content is not a readable image",
    }
    for value, message in cases.items():
        with pytest.raises(BadRequest) as bad:
            validate_records([{"photo": url}, {"photo": value}], ["photo"], {"photo": PHOTO})
        assert bad.value.status == 400 and bad.value.message.startswith(message), (value[:30], bad.value.message)


def test_an_image_too_large_to_decode_is_a_client_error(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    Image.new("L", (64, 64)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 4096 pixels > 2 x 100: PIL refuses to decode
    with pytest.raises(BadRequest, match=r"record 0: column 'photo': '.*big.png' is too large to decode"):
        validate_records([{"photo": str(big)}], ["photo"], {"photo": PHOTO})


@pytest.mark.parametrize(
    "body, named",
    [
        (b'{"inputs": [{"x": NaN}]}', "NaN is not a JSON number"),
        (b'{"inputs": [{"x": -Infinity}]}', "-Infinity is not a JSON number"),
        (b'{"inputs": [{"x": 1e400}]}', "1e400 is out of the range of a double"),
    ],
)
def test_non_finite_numbers_are_a_400_not_a_value(body, named):
    """Python's json reads NaN and Infinity and makes 1e400 infinite; none of them is JSON a request may carry."""
    from ontos_pipeline.platform.invocations import parse_json

    with pytest.raises(BadRequest) as err:
        parse_json(body)
    assert err.value.status == 400 and named in err.value.message
    assert parse_json(b'{"inputs": [{"x": 1.5e300}]}') == {"inputs": [{"x": 1.5e300}]}


def test_a_nan_or_infinite_label_or_correction_is_refused_by_the_one_label_validator():
    """Labels, review edits and feedback corrections all pass `validate_label`: a NaN number label there once
    passed the schema's minimum/maximum (every comparison with NaN is false) and then failed every training."""
    from ontos_pipeline.label.label_files import response_validator, validate_label

    validator = response_validator({"type": "number", "minimum": 0, "maximum": 10})
    assert (
        validate_label(validator, "NaN")[0]
        == "label is not valid JSON (NaN is not a JSON number; send a finite number or null)"
    )
    assert "out of the range of a double" in validate_label(validator, "1e999")[0]
    assert validate_label(validator, "Infinity")[1] is None
    assert validate_label(validator, "7.5") == (None, "7.5")
