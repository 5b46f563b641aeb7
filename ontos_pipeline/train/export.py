"""TRAIN stage input: export the trainable rows of a training sheet as fine-tuning JSONL files.

Plain functions over Spark DataFrames; they know nothing of Dagster. Only rows that pass the dual quality gate
(`trainable`) are exported. Every JSON line is built once on the executors (a Python UDF, cached), Spark writes one
file per format and split into a fresh sibling folder, the written lines are validated (again in Spark), and the
folder is swapped into place: `directory` holds either the previous export or the complete new one.

    <directory>/chat/<split>.jsonl             {"messages": [system, user, assistant]}
    <directory>/instruction/<split>.jsonl      {"prompt": system + "\\n\\n" + user, "response": assistant}
    <directory>/chat_multimodal/<split>.jsonl  like chat, user content = text part + one image part per PNG
    <directory>/index/<split>.jsonl            {"item_ref": ...}, line for line the items of the data files
    <directory>/manifest.json                  rows, bytes and SHA-256 of every file

Lines are sorted by item_ref (then by the line itself), so re-exporting the same rows gives byte-identical files.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from ontos_pipeline.generate.qa_pairs import training_sheet_version
from ontos_pipeline.generate.training_sheet import trainable
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.specs import UseCaseSpec

FORMATS = ("chat", "instruction")
MULTIMODAL = "chat_multimodal"  # exported too when the sheet has an `image_paths` column
INDEX = "index"
SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"
EXAMPLES = 5
_ERRORS = "render_error"  # pseudo-format of the rendered lines: the reason a row could not be rendered
_FIX = "Fix these rows of the training sheet (or reject them); the export directory was left unchanged."
_PNG = b"\x89PNG\r\n\x1a\n"
_DATA_URL = "data:image/png;base64,"


class ExportError(ValueError):
    """The export cannot be written as asked; the message names the file, line, item_ref and reason."""


def assistant_text(response_json: str) -> str:
    """The assistant turn for a label value: a JSON string as is, anything else as compact JSON text."""
    value = json.loads(response_json)
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def _data_url(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(_PNG):
        raise ValueError(f"image {path} is not a PNG file")
    return _DATA_URL + base64.b64encode(data).decode("ascii")


def _load(text, what: str):
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON text ({exc})") from None


def _render(item_ref, split, messages, response, image_paths, multimodal):
    """(format, JSON line) for every export format of one row, or one (_ERRORS, reason) if it cannot be built."""
    try:
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
        msgs = _load(messages, "messages")
        if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
            raise ValueError("messages must be a JSON list of message objects")
        roles = [m.get("role") for m in msgs]
        if roles not in (["system", "user"], ["user"]):
            raise ValueError(f"messages must be [system, user], got roles {roles}")
        if not all(isinstance(m.get("content"), str) for m in msgs):
            raise ValueError("every message content must be a string")
        # an empty system prompt (a template without one) is left out rather than exported as an empty turn
        msgs = [
            {"role": m["role"], "content": m["content"]} for m in msgs if m["role"] == "user" or m["content"].strip()
        ]
        *system, user = msgs
        _load(response, "response")
        assistant = {"role": "assistant", "content": assistant_text(response)}
        out = [
            ("chat", _dumps({"messages": [*msgs, assistant]})),
            (
                "instruction",
                _dumps({"prompt": "\n\n".join(m["content"] for m in msgs), "response": assistant["content"]}),
            ),
            (INDEX, _dumps({"item_ref": item_ref})),
        ]
        if multimodal:
            parts = [{"type": "text", "text": user["content"]}] + [
                {"type": "image_url", "image_url": {"url": _data_url(p)}} for p in image_paths or []
            ]
            out.append((MULTIMODAL, _dumps({"messages": [*system, {"role": "user", "content": parts}, assistant]})))
        return out
    except Exception as exc:  # reported by export_training_data with the item_ref
        return [(_ERRORS, str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}")]


# -- validators (pure functions, run on the executors over the written lines) -----------------------------------
def _nonempty(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _part_error(part) -> str | None:
    if not isinstance(part, dict):
        return "is not an object"
    if part.get("type") == "text":
        return None if _nonempty(part.get("text")) else "has no text"
    if part.get("type") == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else None
        if not (isinstance(url, str) and url.startswith("data:image/") and ";base64," in url):
            return "is not a data:image/...;base64 URL"
        try:
            if not base64.b64decode(url.split(",", 1)[1], validate=True):
                return "has an empty image"
        except (binascii.Error, ValueError):
            return "has invalid base64 data"
        return None
    return f"has unknown type {part.get('type')!r}"


def validate_chat_line(line: str) -> str | None:
    """None if `line` is a chat example (system?, then user/assistant alternating, assistant last), else why not."""
    try:
        obj = json.loads(line)
    except ValueError as exc:
        return f"not JSON: {exc}"
    msgs = obj.get("messages") if isinstance(obj, dict) else None
    if not isinstance(msgs, list) or not msgs:
        return "no non-empty 'messages' list"
    roles = [m.get("role") if isinstance(m, dict) else None for m in msgs]
    start = 1 if roles[0] == "system" else 0
    for i, (role, m) in enumerate(zip(roles, msgs, strict=True)):
        if role not in ("system", "user", "assistant"):
            return f"message {i} has unknown role {role!r}"
        expected = "system" if i < start else ("user", "assistant")[(i - start) % 2]
        if role != expected:
            return f"message {i} is {role}, expected {expected} (system first, then user/assistant alternating)"
        content = m.get("content")
        if role == "user" and isinstance(content, list):
            if not content:
                return f"message {i} (user) has no content parts"
            bad = next(((j, e) for j, p in enumerate(content) if (e := _part_error(p))), None)
            if bad:
                return f"message {i} (user) part {bad[0]} {bad[1]}"
        elif not _nonempty(content):
            return f"message {i} ({role}) has empty or non-string content"
    return None if roles[-1] == "assistant" else "the last message is not from the assistant"


def validate_instruction_line(line: str) -> str | None:
    """None if `line` is {"prompt": non-empty text, "response": non-empty text}, else why not."""
    try:
        obj = json.loads(line)
    except ValueError as exc:
        return f"not JSON: {exc}"
    if not isinstance(obj, dict):
        return "not a JSON object"
    for key in ("prompt", "response"):
        if not _nonempty(obj.get(key)):
            return f"missing, empty or non-string {key!r}"
    return None


def _validate_index_line(line: str) -> str | None:
    try:
        obj = json.loads(line)
    except ValueError as exc:
        return f"not JSON: {exc}"
    return None if isinstance(obj, dict) and _nonempty(obj.get("item_ref")) else "no non-empty 'item_ref'"


VALIDATORS = {
    "chat": validate_chat_line,
    "instruction": validate_instruction_line,
    MULTIMODAL: validate_chat_line,
    INDEX: _validate_index_line,
}


def _check(fmt, line):  # no type hints: Spark would try to infer a pandas UDF from them
    return VALIDATORS[fmt](line)


# -- manifest ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportManifest:
    directory: str
    files: dict[str, dict[str, dict]]  # format -> split -> {"path" (relative), "rows", "bytes", "sha256"}
    rows_per_split: dict[str, int]

    def to_json(self) -> str:
        """The manifest file: the folder by name only (the manifest lies in it), so a moved home keeps it true."""
        data = {**dataclasses.asdict(self), "directory": Path(self.directory).name}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def checksums(self) -> dict[str, str]:
        """{"<format>/<split>": sha256} of every file."""
        return {
            f"{fmt}/{split}": info["sha256"]
            for fmt, splits in sorted(self.files.items())
            for split, info in sorted(splits.items())
        }

    @classmethod
    def read(cls, directory: str | Path) -> ExportManifest:
        data = json.loads((Path(directory) / MANIFEST).read_text(encoding="utf-8"))
        return cls(str(Path(directory).absolute()), data["files"], data["rows_per_split"])


def _file_info(directory: Path, relative: str) -> dict:
    """Rows, bytes and SHA-256 of one file, streamed in 1 MiB chunks."""
    digest, size, rows = hashlib.sha256(), 0, 0
    with open(directory / relative, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
            rows += chunk.count(b"\n")
    return {"path": relative, "rows": rows, "bytes": size, "sha256": digest.hexdigest()}


# -- export -----------------------------------------------------------------------------------------------------
def export_training_data(spark: SparkSession, qa: DataFrame, directory: str | Path) -> ExportManifest:
    """Write the trainable rows of `qa` to `directory` (replacing a previous export atomically)."""
    final = Path(directory).absolute()
    if final.exists() and not (final / MANIFEST).is_file() and (not final.is_dir() or any(final.iterdir())):
        raise ExportError(
            f"{final} exists and is not a training export (no {MANIFEST}); refusing to replace it. "
            "Choose an empty or new directory."
        )
    multimodal = "image_paths" in qa.columns
    formats = (*FORMATS, MULTIMODAL) if multimodal else FORMATS
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        _write(spark, qa, tmp, formats, multimodal)
        _raise_if_invalid(spark, tmp)
        files = {fmt: {s: _file_info(tmp, f"{fmt}/{s}.jsonl") for s in SPLITS} for fmt in (*formats, INDEX)}
        rows = {s: files[INDEX][s]["rows"] for s in SPLITS}
        if any(files[fmt][s]["rows"] != rows[s] for fmt in formats for s in SPLITS):
            raise ExportError(f"the data files of {tmp} do not have one line per index line")
        manifest = ExportManifest(str(final), files, rows)
        (tmp / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        _swap(tmp, final)
        return manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only left after a failure


def _write(spark: SparkSession, qa: DataFrame, tmp: Path, formats: tuple[str, ...], multimodal: bool) -> None:
    """Render every line once (cached), then let Spark write one sorted file per (format, split)."""
    render = F.udf(partial(_render, multimodal=multimodal), "array<struct<format:string,line:string>>")
    images = F.col("image_paths") if multimodal else F.lit(None).cast("array<string>")
    rendered = (
        trainable(qa)
        .select(
            "item_ref", "split", F.explode(render("item_ref", "split", "messages", "response", images)).alias("out")
        )
        .select("item_ref", "split", "out.format", "out.line")
        .persist()
    )
    try:
        errors = rendered.filter(F.col("format") == _ERRORS)  # scans every partition: fills the cache
        if shown := errors.orderBy("item_ref").limit(EXAMPLES).collect():
            raise ExportError(
                f"{errors.count()} trainable rows cannot be exported: "
                + "; ".join(f"item_ref {r['item_ref']}: {r['line']}" for r in shown)
                + f". {_FIX}"
            )
        for fmt in (*formats, INDEX):
            (tmp / fmt).mkdir(parents=True)
            for split in SPLITS:
                # one file per job and no partitionBy: a partitioned write may re-sort and drop the item_ref order
                staging = tmp / "_spark" / f"{fmt}-{split}"
                (
                    rendered.filter((F.col("format") == fmt) & (F.col("split") == split))
                    .coalesce(1)  # cheap: the rendering ran in parallel when the cache was filled
                    .sortWithinPartitions("item_ref", "line")
                    .select("line")
                    .write.text(str(staging))
                )
                parts = sorted(staging.glob("part-*"))
                if len(parts) > 1:
                    raise ExportError(f"Spark wrote {len(parts)} files for {fmt}/{split}, expected one")
                target = tmp / fmt / f"{split}.jsonl"
                if parts:
                    os.replace(parts[0], target)
                else:
                    target.touch()
        shutil.rmtree(tmp / "_spark")
    finally:
        rendered.unpersist()


def _swap(new: Path, final: Path) -> None:
    """Rename the old export aside, the new one in, then delete the old one."""
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:12]}")
    if final.exists():
        final.rename(old)
    try:
        new.rename(final)
    except BaseException:
        if old.exists():
            old.rename(final)
        raise
    shutil.rmtree(old, ignore_errors=True)


# -- validation of written files --------------------------------------------------------------------------------
def _export_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*/*.jsonl") if p.parent.name in VALIDATORS)


def _checked_lines(spark: SparkSession, files: list[Path]) -> DataFrame:
    """format, split, line and the validator's reason (null when valid) of every line of `files`, in one read."""
    path = F.col("_metadata.file_path")
    return (
        spark.read.text([str(p) for p in files])
        .select(
            F.regexp_extract(path, r"([^/]+)/[^/]+\.jsonl$", 1).alias("format"),
            F.regexp_extract(path, r"([^/]+)\.jsonl$", 1).alias("split"),
            F.monotonically_increasing_id().alias("position"),
            F.col("value").alias("line"),
        )
        .withColumn("reason", F.udf(_check, "string")("format", "line"))
    )


def validate_export(spark: SparkSession, directory: str | Path) -> dict[str, int]:
    """Re-read every export file in Spark and count its invalid lines: {"<format>/<split>": invalid_lines}."""
    files = _export_files(Path(directory))
    counts = {f"{p.parent.name}/{p.stem}": 0 for p in files}
    if files:
        invalid = _checked_lines(spark, files).filter(F.col("reason").isNotNull()).groupBy("format", "split").count()
        counts.update({f"{r['format']}/{r['split']}": r["count"] for r in invalid.collect()})
    return counts


def _raise_if_invalid(spark: SparkSession, directory: Path) -> None:
    counts = validate_export(spark, directory)
    if not sum(counts.values()):
        return
    # line numbers: positions increase in file order (a file's splits are read in order), so rank them per file
    checked = _checked_lines(spark, _export_files(directory)).withColumn(
        "line_no", F.row_number().over(Window.partitionBy("format", "split").orderBy("position"))
    )
    index = checked.filter(F.col("format") == INDEX).select(
        "split", "line_no", F.get_json_object("line", "$.item_ref").alias("item_ref")
    )
    rows = (
        checked.filter(F.col("reason").isNotNull())
        .join(index, ["split", "line_no"], "left")
        .orderBy("format", "split", "line_no")
        .limit(EXAMPLES)
        .collect()
    )
    shown = "; ".join(
        f"{r['format']}/{r['split']}.jsonl line {r['line_no']} (item_ref {r['item_ref']}): {r['reason']}" for r in rows
    )
    raise ExportError(f"{sum(counts.values())} exported lines are invalid, e.g. {shown}. {_FIX}")


def export_directory(lakehouse: Lakehouse, spec: UseCaseSpec, version: str) -> Path:
    """Where the export of training-sheet `version` of the use case lives (one folder per version)."""
    return Path(lakehouse.volume_path("exports", spec.name)) / version


def current_export(lakehouse: Lakehouse, spec: UseCaseSpec) -> tuple[str, Path]:
    """(training-sheet version, export folder) of the use case's current training sheet; a clear error when that
    version has not been exported (its manifest is written last, so a folder without one is no export)."""
    version = training_sheet_version(lakehouse, spec.training_sheet_id)
    directory = export_directory(lakehouse, spec, version or "none")
    if version is None or not (directory / MANIFEST).exists():
        raise RuntimeError(
            f"no training export of the current training sheet of {spec.name} (looked in {directory}); materialize "
            "training_sheet and training_export first"
        )
    return version, directory
