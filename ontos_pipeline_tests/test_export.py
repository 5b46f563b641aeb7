"""The fine-tuning export: the dual gate, the JSONL formats and their validators, manifest, atomic replacement."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image
from pyspark.sql import types as T

from ontos_pipeline.generate.training_sheet import TRAINABLE_STATUSES, trainable
from ontos_pipeline.platform.ddl import load_ddl
from ontos_pipeline.train.export import (
    FORMATS,
    ExportError,
    assistant_text,
    export_training_data,
    validate_chat_line,
    validate_export,
    validate_instruction_line,
)

SCHEMA = load_ddl("qa_pairs").spark_schema()
SPLITS = ("train", "val", "test")
SYSTEM = "You inspect widgets."


def qa_row(
    item_ref: str,
    *,
    user: str | None = None,
    response: str | None = '"ok"',
    status: str = "approved",
    split: str = "train",
    allowed=None,
    prohibited=None,
    messages: str | None = None,
    **extra,
) -> dict:
    if messages is None:
        messages = json.dumps(
            [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Is {item_ref} ok?" if user is None else user},
            ]
        )
    return {
        "training_sheet_id": "widgets",
        "version": "v1",
        "item_ref": item_ref,
        "messages": messages,
        "response": response,
        "status": status,
        "response_source": "canonical_label",
        "split": split,
        "allowed_uses": allowed,
        "prohibited_uses": prohibited,
        "sheet_version": "s1",
        "template_version": "t1",
        "updated_at": datetime(2025, 1, 1, tzinfo=UTC),
        **extra,
    }


def qa_frame(spark, rows: list[dict], images: bool = False):
    schema = SCHEMA
    if images:
        schema = T.StructType([*SCHEMA.fields, T.StructField("image_paths", T.ArrayType(T.StringType()))])
    return spark.createDataFrame([tuple(r.get(f.name) for f in schema) for r in rows], schema)


def lines(directory: Path, fmt: str, split: str) -> list[dict]:
    return [json.loads(x) for x in (directory / fmt / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def sample_rows() -> list[dict]:
    """Out of item_ref order on purpose; the test split stays empty."""
    return [
        qa_row("A3", response='{"cert_id": "C-1", "valid": true}', split="val", status="edited"),
        qa_row("A2", response="412.5", status="auto_approved"),
        qa_row("A1", response='"solder_bridge"', user="Prüfung ✓ of A1?"),
        qa_row("A4", split="val", messages=json.dumps([{"role": "user", "content": "Only a user turn"}])),
        qa_row("A0", status="rejected"),
        qa_row(
            "A5",
            split="val",
            messages=json.dumps([{"role": "system", "content": ""}, {"role": "user", "content": "No system prompt"}]),
        ),
    ]


# -- the dual gate ----------------------------------------------------------------------------------------------
STATUSES = ("pending", "auto_approved", "approved", "edited", "rejected", "flagged")
RESPONSES = (None, '"ok"', "412.5", '{"cert_id": "C-9"}')
ALLOWED = (None, [], ["training"], ["evaluation"], ["evaluation", "training"], [None], [None, "training"])
PROHIBITED = (None, [], ["training"], ["serving"], ["serving", "training"], [None], [None, "training"])


def gate(row: dict) -> bool:
    return (
        row["status"] in TRAINABLE_STATUSES
        and row["response"] is not None
        and "training" not in (row["prohibited_uses"] or [])
        and (row["allowed_uses"] is None or "training" in row["allowed_uses"])
    )


def test_gate_exports_exactly_the_rows_allowed_for_training(spark, tmp_path):
    rng = random.Random(20250101)
    rows = [
        qa_row(
            f"item-{i:04d}",
            user=f"Check <<item-{i:04d}>> please",
            status=rng.choice(STATUSES),
            response=rng.choice(RESPONSES),
            split=rng.choice(SPLITS),
            allowed=rng.choice(ALLOWED),
            prohibited=rng.choice(PROHIBITED),
        )
        for i in range(300)
    ]
    rng.shuffle(rows)  # the files must come out sorted by item_ref whatever the input order
    expected = {r["item_ref"] for r in rows if gate(r)}
    prohibited = {r["item_ref"] for r in rows if "training" in (r["prohibited_uses"] or [])}
    assert 30 < len(expected) < 270 and prohibited - expected  # both sides of the gate are exercised
    approved_but_prohibited = {
        r["item_ref"]
        for r in rows
        if r["status"] in TRAINABLE_STATUSES and r["response"] and r["item_ref"] in prohibited
    }
    assert approved_but_prohibited

    qa = qa_frame(spark, rows).repartition(4)
    assert {r.item_ref for r in trainable(qa).select("item_ref").collect()} == expected

    out = tmp_path / "export"
    manifest = export_training_data(spark, qa, out)
    exported = {}
    for split in SPLITS:
        refs = [x["item_ref"] for x in lines(out, "index", split)]
        assert refs == sorted(refs)
        for fmt in FORMATS:  # data lines are in index order
            data = (out / fmt / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
            assert len(data) == len(refs) and all(f"<<{ref}>>" in x for ref, x in zip(refs, data, strict=True))
        exported.update(dict.fromkeys(refs, split))
        assert manifest.rows_per_split[split] == len(refs)
    assert set(exported) == expected
    assert all(exported[r["item_ref"]] == r["split"] for r in rows if r["item_ref"] in expected)
    everything = "".join(p.read_text(encoding="utf-8") for p in out.rglob("*.jsonl"))
    assert all(f"<<{ref}>>" not in everything for ref in prohibited)
    assert all(f"<<{ref}>>" in everything for ref in expected)


# -- formats ----------------------------------------------------------------------------------------------------
def test_each_format_has_the_right_shape_and_validates(spark, tmp_path):
    out = tmp_path / "export"
    manifest = export_training_data(spark, qa_frame(spark, sample_rows()), out)
    assert sorted(p.name for p in out.iterdir()) == ["chat", "index", "instruction", "manifest.json"]
    assert manifest.rows_per_split == {"train": 2, "val": 3, "test": 0}
    assert [x["item_ref"] for x in lines(out, "index", "train")] == ["A1", "A2"]
    assert [x["item_ref"] for x in lines(out, "index", "val")] == ["A3", "A4", "A5"]

    chat = lines(out, "chat", "train") + lines(out, "chat", "val")
    assert [[m["role"] for m in x["messages"]] for x in chat] == [["system", "user", "assistant"]] * 3 + [
        ["user", "assistant"]
    ] * 2  # A4 has no system turn, A5 an empty one (left out)
    assert [x["messages"][-1]["content"] for x in chat] == [
        "solder_bridge",
        "412.5",
        '{"cert_id":"C-1","valid":true}',
        "ok",
        "ok",
    ]
    assert chat[0]["messages"][:2] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Prüfung ✓ of A1?"},
    ]
    instruction = lines(out, "instruction", "train") + lines(out, "instruction", "val")
    assert instruction[0] == {"prompt": f"{SYSTEM}\n\nPrüfung ✓ of A1?", "response": "solder_bridge"}
    assert instruction[3:] == [
        {"prompt": "Only a user turn", "response": "ok"},
        {"prompt": "No system prompt", "response": "ok"},
    ]
    assert "Prüfung ✓" in (out / "chat" / "train.jsonl").read_text(encoding="utf-8")  # UTF-8, not \u escapes

    for fmt in (*FORMATS, "index"):
        assert (out / fmt / "test.jsonl").read_bytes() == b""  # empty split, stable file set
    for split in SPLITS:
        raw = (out / "chat" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        assert all(validate_chat_line(x) is None for x in raw)
        raw = (out / "instruction" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        assert all(validate_instruction_line(x) is None for x in raw)
    assert validate_export(spark, out) == {f"{fmt}/{s}": 0 for fmt in ("chat", "index", "instruction") for s in SPLITS}


def test_assistant_text():
    assert assistant_text('"solder_bridge"') == "solder_bridge"
    assert assistant_text("412.5") == "412.5"
    assert assistant_text('{"cert_id": "C-1", "lines": [1, 2]}') == '{"cert_id":"C-1","lines":[1,2]}'
    assert assistant_text('"Prüfung"') == "Prüfung"
    with pytest.raises(ValueError):
        assistant_text("solder_bridge")


# -- validators -------------------------------------------------------------------------------------------------
def chat(*messages) -> str:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in messages]})


S, U, A = ("system", "sys"), ("user", "question"), ("assistant", "answer")
PNG_URL = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nxx").decode()


@pytest.mark.parametrize(
    "line",
    [
        chat(S, U, A),
        chat(U, A),
        chat(S, U, A, U, A),
        chat(S, ("user", [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": PNG_URL}}]), A),
    ],
)
def test_chat_validator_accepts(line):
    assert validate_chat_line(line) is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json", "not JSON"),
        ("[]", "'messages'"),
        (json.dumps({"messages": []}), "'messages'"),
        (chat(S, U), "last message is not from the assistant"),
        (chat(S, U, A, U), "last message is not from the assistant"),
        (chat(S, A, U), "message 1 is assistant, expected user"),
        (chat(S, U, U, A), "message 2 is user, expected assistant"),
        (chat(U, S, A), "message 1 is system, expected assistant"),
        (chat(S, ("user", ""), A), "message 1 (user) has empty"),
        (chat(S, ("user", "  "), A), "message 1 (user) has empty"),
        (chat(S, U, ("assistant", 412.5)), "message 2 (assistant) has empty or non-string"),
        (chat(S, ("tool", "x"), A), "message 1 has unknown role 'tool'"),
        (json.dumps({"messages": ["hello", A]}), "message 0 has unknown role None"),
        (chat(S, ("user", []), A), "no content parts"),
        (chat(S, ("user", [{"type": "text", "text": ""}]), A), "part 0 has no text"),
        (chat(S, ("user", [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}]), A), "data:image"),
        (
            chat(S, ("user", [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]), A),
            "invalid base64",
        ),
        (chat(S, ("user", [{"type": "audio"}]), A), "unknown type 'audio'"),
        (chat(S, U, ("assistant", [{"type": "text", "text": "x"}])), "message 2 (assistant) has empty or non-string"),
    ],
)
def test_chat_validator_rejects(line, reason):
    assert reason in validate_chat_line(line)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{", "not JSON"),
        ('"prompt"', "not a JSON object"),
        (json.dumps({"response": "x"}), "'prompt'"),
        (json.dumps({"prompt": "p"}), "'response'"),
        (json.dumps({"prompt": "p", "response": ""}), "'response'"),
        (json.dumps({"prompt": 3, "response": "x"}), "'prompt'"),
    ],
)
def test_instruction_validator_rejects(line, reason):
    assert reason in validate_instruction_line(line)
    assert validate_instruction_line(json.dumps({"prompt": "p", "response": "r"})) is None


# -- manifest and idempotence -----------------------------------------------------------------------------------
def test_manifest_matches_files_and_rerun_is_byte_identical(spark, tmp_path):
    out = tmp_path / "export"
    qa = qa_frame(spark, sample_rows())
    first = export_training_data(spark, qa, out)
    assert (out / "manifest.json").read_text(encoding="utf-8") == first.to_json()
    assert json.loads(first.to_json())["rows_per_split"] == first.rows_per_split
    assert set(first.files) == {"chat", "instruction", "index"}
    for fmt, by_split in first.files.items():
        for split, info in by_split.items():
            data = (out / info["path"]).read_bytes()
            assert info["path"] == f"{fmt}/{split}.jsonl"
            assert info == {
                "path": info["path"],
                "rows": data.count(b"\n"),
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            assert info["rows"] == first.rows_per_split[split]
    before = tree(out)

    second = export_training_data(spark, qa, out)
    assert second == first
    assert tree(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no temporary or old directories left


# -- failures leave the previous export untouched ---------------------------------------------------------------
def test_invalid_row_raises_and_keeps_the_previous_export(spark, tmp_path):
    out = tmp_path / "export"
    export_training_data(spark, qa_frame(spark, sample_rows()), out)
    before = tree(out)

    bad = [*sample_rows(), qa_row("A15", user="")]
    with pytest.raises(ExportError) as err:
        export_training_data(spark, qa_frame(spark, bad), out)
    assert "chat/train.jsonl line 2 (item_ref A15): message 1 (user) has empty" in str(err.value)
    assert tree(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["export"]

    broken = [*sample_rows(), qa_row("A16", messages="[{not json"), qa_row("A17", response="solder_bridge")]
    with pytest.raises(
        ExportError,
        match=r"2 trainable rows cannot be exported: item_ref A16: messages is not JSON.*"
        r"item_ref A17: response is not JSON",
    ):
        export_training_data(spark, qa_frame(spark, broken), out)
    assert tree(out) == before

    with pytest.raises(ExportError, match="split 'dev'"):
        export_training_data(spark, qa_frame(spark, [qa_row("A18", split="dev")]), out)
    assert tree(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_refuses_to_replace_a_directory_that_is_not_an_export(spark, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ExportError, match="not a training export"):
        export_training_data(spark, qa_frame(spark, sample_rows()), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_validate_export_counts_invalid_lines_per_file(spark, tmp_path):
    out = tmp_path / "export"
    export_training_data(spark, qa_frame(spark, sample_rows()), out)
    with open(out / "chat" / "val.jsonl", "a", encoding="utf-8") as f:
        f.write(chat(S, U) + "\nnot json\n")
    counts = validate_export(spark, out)
    assert counts["chat/val"] == 2
    assert sum(counts.values()) == 2 and len(counts) == 9


# -- multimodal -------------------------------------------------------------------------------------------------
def test_multimodal_lines_embed_the_png_as_a_data_url(spark, tmp_path):
    png = tmp_path / "widget.png"
    Image.new("RGB", (2, 3), (200, 10, 10)).save(png)
    other = tmp_path / "other.png"
    Image.new("L", (1, 1), 7).save(other)
    rows = [
        qa_row("M1", image_paths=[str(png)]),
        qa_row("M2", image_paths=[str(png), str(other)], split="val"),
        qa_row("M3", image_paths=None),
        qa_row("M4", image_paths=[str(png)], prohibited=["training"]),
    ]
    out = tmp_path / "export"
    manifest = export_training_data(spark, qa_frame(spark, rows, images=True), out)
    assert set(manifest.files) == {"chat", "instruction", "chat_multimodal", "index"}
    assert validate_export(spark, out)["chat_multimodal/train"] == 0

    train = lines(out, "chat_multimodal", "train")
    assert [x["messages"][1]["content"][0] for x in train] == [
        {"type": "text", "text": "Is M1 ok?"},
        {"type": "text", "text": "Is M3 ok?"},
    ]
    assert len(train[1]["messages"][1]["content"]) == 1  # no images: the text part only
    (m2,) = lines(out, "chat_multimodal", "val")
    assert [m["role"] for m in m2["messages"]] == ["system", "user", "assistant"]
    urls = [p["image_url"]["url"] for p in m2["messages"][1]["content"][1:]]
    assert all(u.startswith("data:image/png;base64,") for u in urls)
    assert [base64.b64decode(u.split(",", 1)[1]) for u in urls] == [png.read_bytes(), other.read_bytes()]
    raw = (out / "chat_multimodal" / "val.jsonl").read_text(encoding="utf-8").splitlines()
    assert validate_chat_line(raw[0]) is None
    assert lines(out, "chat", "val")[0]["messages"][1]["content"] == "Is M2 ok?"  # plain chat keeps text only

    missing = [qa_row("M5", image_paths=[str(tmp_path / "gone.png")])]
    with pytest.raises(ExportError, match=r"item_ref M5: FileNotFoundError"):
        export_training_data(spark, qa_frame(spark, missing, images=True), out)
