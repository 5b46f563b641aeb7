"""Sheet assembly on real Spark and Delta tables: joins, casts, versions, registry."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from ontos_pipeline.data.sheet import (
    SheetBuildError,
    assemble_sheet,
    build_sheet,
    content_version,
    current_sheet,
    read_sources,
)
from ontos_pipeline_tests.widgets import MAKERS, good_widgets, widgets_spec, write_widgets


def test_join_maps_each_item_to_its_maker_and_keeps_unmatched_items(spark, lakehouse, home, widgets_dir):
    spec = widgets_spec(widgets_dir)
    write_widgets(spark, lakehouse, good_widgets(home), makers=[*MAKERS, ("m3", "Unused")])
    sheet = assemble_sheet(spec, read_sources(spark, lakehouse, spec))
    assert sheet.columns == ["item_ref", "size_mm", "color", "photo", "notes", "maker"]
    got = {r["item_ref"]: (r["size_mm"], r["color"], r["maker"]) for r in sheet.collect()}
    assert got == {
        "W1": (10.0, "red", "Acme"),
        "W2": (55.5, "blue", "Globex"),
        "W3": (None, "red", "Acme"),
        "W4": (99.0, None, None),
    }


def test_inner_join_drops_items_without_a_match(spark, lakehouse, home, widgets_dir):
    text = (widgets_dir / "widgets.yaml").read_text().replace("how: left", "how: inner")
    (widgets_dir / "widgets.yaml").write_text(text)
    spec = widgets_spec(widgets_dir)
    write_widgets(spark, lakehouse, good_widgets(home))
    sheet = assemble_sheet(spec, read_sources(spark, lakehouse, spec))
    assert sorted(r["item_ref"] for r in sheet.collect()) == ["W1", "W2", "W3"]


def test_integer_source_column_is_cast_to_the_declared_double(spark, lakehouse, home, widgets_dir):
    spec = widgets_spec(widgets_dir)
    text = (widgets_dir / "widgets.yaml").read_text().replace("size_mm: double", "size_mm: integer")
    (widgets_dir / "widgets.yaml").write_text(text)
    spec = widgets_spec(widgets_dir)
    widgets = [(r[0], None if r[1] is None else int(r[1]), *r[2:]) for r in good_widgets(home)]
    write_widgets(
        spark,
        lakehouse,
        widgets,
        schema="item_ref string, size_mm long, color string, photo string, notes string, maker_id string",
    )
    sheet = assemble_sheet(spec, read_sources(spark, lakehouse, spec))
    assert dict(sheet.dtypes)["size_mm"] == "double"
    assert sheet.filter(F.col("item_ref") == "W2").first()["size_mm"] == 55.0


def test_source_mismatches_name_the_spec_field_and_table(spark, lakehouse, home, widgets_dir):
    spec = widgets_spec(widgets_dir)
    with pytest.raises(
        SheetBuildError,
        match=r"widgets.yaml: sheet.sources.widgets.table: table "
        r"ontos.factory.widgets does not exist",
    ):
        read_sources(spark, lakehouse, spec)
    write_widgets(
        spark,
        lakehouse,
        [(r[0], r[1], r[2], r[3], r[4]) for r in good_widgets(home)],
        schema="item_ref string, size_mm double, color string, photo string, notes string",
    )
    with pytest.raises(
        SheetBuildError,
        match=r"sheet.sources.widgets.columns.maker_id: table ontos.factory.widgets "
        r"has no column 'maker_id'",
    ):
        read_sources(spark, lakehouse, spec)
    write_widgets(spark, lakehouse, [(r[0], str(r[1]), *r[2:]) for r in good_widgets(home)], schema=WIDGET_STRING_SIZE)
    with pytest.raises(
        SheetBuildError,
        match=r"columns.size_mm: table ontos.factory.widgets stores it as string, "
        r"the spec declares double",
    ):
        read_sources(spark, lakehouse, spec)


WIDGET_STRING_SIZE = "item_ref string, size_mm string, color string, photo string, notes string, maker_id string"


def test_content_version_ignores_row_order_and_sees_every_value(spark):
    a = spark.createDataFrame([("x", 1.0), ("y", 2.0), ("z", None)], "item_ref string, v double")
    shuffled = a.orderBy(F.desc("item_ref")).repartition(3)
    changed = spark.createDataFrame([("x", 1.0), ("y", 2.5), ("z", None)], "item_ref string, v double")
    assert content_version(a) == content_version(shuffled)
    assert content_version(a) != content_version(changed)
    assert content_version(a) != content_version(a.withColumnRenamed("v", "w"))


def test_rematerializing_gives_the_same_version_and_no_duplicates(spark, lakehouse, home, widgets_dir):
    spec = widgets_spec(widgets_dir)
    write_widgets(spark, lakehouse, good_widgets(home))
    first = build_sheet(spark, lakehouse, spec, run_id="run-1")
    again = build_sheet(spark, lakehouse, spec, run_id="run-2")
    assert (first.created, again.created) == (True, False)
    assert (
        first.version == again.version
        and first.table == again.table == f"ontos.workbench.sheet_widgets_{first.version[:12]}"
    )
    assert lakehouse.row_count(first.table) == 4
    registry = lakehouse.read(spark, "sheets").collect()
    assert [(r["version"], r["status"], r["dagster_run_id"]) for r in registry] == [
        (first.version, "published", "run-1")
    ]

    write_widgets(spark, lakehouse, good_widgets(home)[:3])
    third = build_sheet(spark, lakehouse, spec, run_id="run-3")
    assert third.version != first.version and third.row_count == 3
    statuses = {r["version"]: r["status"] for r in lakehouse.read(spark, "sheets").collect()}
    assert statuses == {first.version: "archived", third.version: "published"}
    assert current_sheet(lakehouse, "widgets").version == third.version
    assert lakehouse.row_count(first.table) == 4  # the archived snapshot stays readable
