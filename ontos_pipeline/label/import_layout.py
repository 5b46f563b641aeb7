"""The layout of a `labels.import_table` and its check (no Spark here: the reference and the CLI read it too)."""

from __future__ import annotations

from collections.abc import Mapping

from ontos_pipeline.specs import ITEM_KEY, UseCaseSpec

# The layout of a `labels.import_table`: column -> (accepted Spark types, what it holds). Types outside the list
# are refused before anything is read, with the whole layout in the error.
IMPORT_LAYOUT: dict[str, tuple[tuple[str, ...], str]] = {
    ITEM_KEY: (("string", "bigint", "int"), "the item's key in the sheet"),
    "label_data": (("string",), "JSON text of a value the template's response_schema accepts, e.g. '\"ok\"' or '42.5'"),
    "confidence": (("double", "float", "int", "bigint"), "0..1, or null"),
    "labeled_by": (("string",), "who labelled it"),
    "labeled_at": (("timestamp", "timestamp_ntz"), "when"),
    "allowed_uses": (("array<string>",), "null, or the uses allowed (training, evaluation, serving)"),
    "prohibited_uses": (("array<string>",), "null, or the uses prohibited"),
}


class LabelTableError(ValueError):
    """A label import table does not have the layout canonical labels read."""


def check_import_layout(types: Mapping[str, str], table: str, spec: UseCaseSpec) -> None:
    """Refuse an import table whose columns (name -> Spark type) do not fit `IMPORT_LAYOUT`, naming every problem."""
    problems = [f"missing column {c}" for c in IMPORT_LAYOUT if c not in types]
    problems += [
        f"column {c} is {types[c]}, not {' or '.join(ok)}"
        for c, (ok, _) in IMPORT_LAYOUT.items()
        if c in types and types[c] not in ok
    ]
    if problems:
        layout = "; ".join(f"{c} {ok[0]} ({what})" for c, (ok, what) in IMPORT_LAYOUT.items())
        raise LabelTableError(
            f"{table}, the labels.import_table of use case {spec.name} ({spec.path}), cannot be read as labels: "
            f"{'; '.join(problems)}. A label import table has the columns {layout}. Fix the table, or point "
            "labels.import_table at one that has them; nothing was written."
        )
