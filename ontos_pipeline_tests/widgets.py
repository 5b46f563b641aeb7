"""Hand-made `widgets` tables for sheet and check tests (the spec is in conftest.WIDGETS_SPEC)."""

from __future__ import annotations

from pathlib import Path

from ontos_pipeline.specs import load_use_case

WIDGET_SCHEMA = "item_ref string, size_mm double, color string, photo string, notes string, maker_id string"
MAKER_SCHEMA = "maker_id string, maker_name string"
MAKERS = [("m1", "Acme"), ("m2", "Globex")]


def photo(home: Path, name: str) -> str:
    path = home / "files" / "photos" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    return str(path)


def good_widgets(home: Path) -> list[tuple]:
    return [
        ("W1", 10.0, "red", photo(home, "W1"), "fine", "m1"),
        ("W2", 55.5, "blue", photo(home, "W2"), None, "m2"),
        ("W3", None, "red", photo(home, "W3"), "scratched edge", "m1"),
        ("W4", 99.0, None, None, "no photo taken", "m9"),  # unknown maker: left join keeps the widget
    ]


def write_widgets(spark, lakehouse, widgets: list[tuple], makers=MAKERS, schema: str = WIDGET_SCHEMA) -> None:
    lakehouse.write("factory.widgets", spark.createDataFrame(widgets, schema))
    lakehouse.write("factory.makers", spark.createDataFrame(makers, MAKER_SCHEMA))


def widgets_spec(folder: Path):
    return load_use_case(folder / "widgets.yaml")


LABEL_SCHEMA = (
    "item_ref string, label_data string, confidence double, labeled_by string, labeled_at timestamp, "
    "allowed_uses array<string>, prohibited_uses array<string>"
)


def write_labels(spark, lakehouse, labels: list[tuple]) -> None:
    """(item_ref, label value, labeled_by) -> the spec's import table, with JSON label_data."""
    import json
    from datetime import UTC, datetime

    at = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [(ref, json.dumps(value), 0.9, who, at, None, None) for ref, value, who in labels]
    lakehouse.write("factory.widget_labels", spark.createDataFrame(rows, LABEL_SCHEMA))
