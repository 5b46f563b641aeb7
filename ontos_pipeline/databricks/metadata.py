"""Dagster metadata values as Pipes external metadata ({"raw_value", "type"}), the inverse of Dagster's
`metadata_value_from_external`, so a step's metadata looks the same whether it ran locally or on Databricks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import MetadataValue, TableSchema
from dagster._core.definitions.metadata import normalize_metadata_value

DESCRIPTION_KEY = "ontos/check_description"  # check descriptions travel as metadata (Pipes has no field for them)
_SIMPLE = {
    "MarkdownMetadataValue": ("md", "md_str"),
    "TextMetadataValue": ("text", "text"),
    "UrlMetadataValue": ("url", "url"),
    "PathMetadataValue": ("path", "path"),
    "JsonMetadataValue": ("json", "data"),
    "IntMetadataValue": ("int", "value"),
    "FloatMetadataValue": ("float", "value"),
    "BoolMetadataValue": ("bool", "value"),
    "TimestampMetadataValue": ("timestamp", "value"),
}


def _schema(schema: TableSchema) -> list[dict]:
    return [
        {"name": c.name, "type": c.type, "description": c.description, "tags": dict(c.tags or {})}
        for c in schema.columns
    ]


def external_value(value: Any) -> dict[str, Any]:
    normalized: MetadataValue = normalize_metadata_value(value)
    kind = type(normalized).__name__
    if kind in _SIMPLE:
        type_name, attribute = _SIMPLE[kind]
        return {"type": type_name, "raw_value": getattr(normalized, attribute)}
    if kind == "TableSchemaMetadataValue":
        return {"type": "table_schema", "raw_value": {"columns": _schema(normalized.schema)}}
    if kind == "TableMetadataValue":
        return {
            "type": "table",
            "raw_value": {"records": [dict(r.data) for r in normalized.records], "schema": _schema(normalized.schema)},
        }
    if kind == "NullMetadataValue":
        return {"type": "null", "raw_value": None}
    raise TypeError(f"metadata of type {kind} cannot travel through Pipes; use text, md, json or numbers")


def to_external(metadata: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {key: external_value(value) for key, value in metadata.items()}
