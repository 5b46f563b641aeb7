"""docs/use-case-reference.md, generated from `spec_fields.FIELDS` with the defaults of the spec classes."""

from __future__ import annotations

import dataclasses

from ontos_pipeline import specs
from ontos_pipeline.label.import_layout import IMPORT_LAYOUT
from ontos_pipeline.spec_fields import FIELDS, REQUIRED, ClassDefault, SpecField


def default_text(field: SpecField) -> str:
    value = field.default
    if isinstance(value, ClassDefault):
        spec_field = next(f for f in dataclasses.fields(getattr(specs, value.cls)) if f.name == value.attribute)
        value = (
            spec_field.default_factory()  # type: ignore[misc]
            if spec_field.default_factory is not dataclasses.MISSING
            else spec_field.default
        )
    if value is REQUIRED:
        return "required"
    if value is None:
        return "-"
    if value == "":
        return '""'
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def reference_markdown() -> str:
    """docs/use-case-reference.md."""
    lines = [
        "# Use-case file reference",
        "",
        "Generated from `ontos_pipeline/spec_fields.py` (defaults from the classes of `specs.py`) by",
        "`uv run ontos specs --reference` (a test keeps it current).",
        "A use case is one YAML file in `ONTOS_USE_CASES_DIR`; `uv run ontos use-case init` writes a starting one for",
        "a loaded table. `<source>` and `<variable>` are names you choose, `[]` is an item of a list.",
        "",
        "| field | type | default | meaning | example |",
        "|---|---|---|---|---|",
    ]
    for f in FIELDS:
        example = f"`{f.example}`" if f.example else ""
        meaning = f.meaning.replace("|", "\\|")
        lines.append(f"| `{f.path}` | {f.type} | {default_text(f)} | {meaning} | {example} |")
    lines += [
        "",
        "## The label import table (`labels.import_table`)",
        "",
        "One row per label (an item may have several, from different labelers). A table of another layout is refused",
        "when `canonical_labels` materializes, naming every missing or mistyped column; nothing is written.",
        "",
        "| column | type | holds |",
        "|---|---|---|",
    ]
    lines += [f"| `{c}` | {' or '.join(types)} | {what} |" for c, (types, what) in IMPORT_LAYOUT.items()]
    return "\n".join(lines) + "\n"
