"""DDL in schemas/ is the single source of table schemas."""

from __future__ import annotations

import pytest
from pyspark.sql import types as T

from ontos_pipeline.platform.ddl import DDLError, all_ddl, load_ddl, parse_ddl

DESIGN_TABLES = {
    "sheets",
    "templates",
    "canonical_labels",
    "qa_pairs",
    "label_reviews",
    "training_runs",
    "inference_log",
    "feedback",
    "monitoring_reports",
    "alerts",
    "gap_reports",
    "annotation_tasks",
}


def test_every_design_table_has_a_ddl_file_that_parses():
    tables = all_ddl()
    assert set(tables) >= DESIGN_TABLES
    for name, ddl in tables.items():
        assert ddl.name == name
        assert ddl.columns, name
        assert len(ddl.spark_schema().fields) == len(ddl.arrow_schema()) == len(ddl.columns)


def test_types_map_to_spark_and_arrow():
    labels = load_ddl("canonical_labels")
    spark = {f.name: f.dataType for f in labels.spark_schema()}
    assert spark["label_data"] == T.StringType()  # VARIANT is JSON text locally
    assert spark["allowed_uses"] == T.ArrayType(T.StringType(), True)
    assert spark["version"] == T.LongType()
    assert str(labels.arrow_schema().field("created_at").type) == "timestamp[us, tz=UTC]"
    assert "label_data" in labels.required and "confidence" not in labels.required


def test_render_fills_catalog_and_schema_and_rejects_injection():
    sql = load_ddl("sheets").render("main", "ml")
    assert sql.startswith("CREATE TABLE IF NOT EXISTS main.ml.sheets (")
    with pytest.raises(ValueError, match="not a valid identifier"):
        load_ddl("sheets").render("main; DROP TABLE x", "ml")


def test_malformed_ddl_is_reported_with_the_line():
    bad = "CREATE TABLE IF NOT EXISTS {catalog}.{schema}.t (\n  a STRING,\n  b NUMBER(3) NOT NULL\n) USING DELTA;"
    with pytest.raises(DDLError, match=r"t.sql: column line 2 'b NUMBER\(3\) NOT NULL'"):
        parse_ddl(bad, source="t.sql")
    with pytest.raises(DDLError, match="expected one 'CREATE TABLE"):
        parse_ddl("SELECT 1", source="t.sql")
