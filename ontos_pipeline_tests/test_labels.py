"""Canonical labels: merge precedence, history, rejects, conflicts and usage constraints on real Delta tables."""

from __future__ import annotations

import json
import re

import pytest
from pyspark.sql import functions as F

from ontos_pipeline.data.sheet import build_sheet
from ontos_pipeline.generate.review import Decision, record_decisions
from ontos_pipeline.generate.template import compile_template, register_template
from ontos_pipeline.generate.training_sheet import build_training_sheet, current_training_sheet
from ontos_pipeline.label.import_layout import LabelTableError
from ontos_pipeline.label.label_files import inbox_dir, parse_label_file
from ontos_pipeline.label.labels import current_labels, merge_labels
from ontos_pipeline_tests.widgets import good_widgets, widgets_spec, write_labels, write_widgets


@pytest.fixture
def setup(spark, lakehouse, home, widgets_dir):
    spec = widgets_spec(widgets_dir)
    write_widgets(spark, lakehouse, good_widgets(home))
    return spec, build_sheet(spark, lakehouse, spec)


def labels_by_item(spark, lakehouse):
    return {r["item_ref"]: r for r in current_labels(spark, lakehouse, "widgets", "widget_ok").collect()}


def test_import_validates_rejects_and_is_idempotent(spark, lakehouse, setup):
    spec, snapshot = setup
    write_labels(
        spark, lakehouse, [("W1", "ok", "qa"), ("W2", "not_ok", "qa"), ("W3", "maybe", "qa"), ("W9", "ok", "qa")]
    )
    first = merge_labels(spark, lakehouse, spec, snapshot)
    assert (first.items, first.labelled, first.appended, first.rejects) == (4, 2, 2, 2)
    assert first.coverage == 0.5 and first.distribution == {"ok": 1, "not_ok": 1}
    reasons = {r["item_ref"]: r["reason"] for r in lakehouse.read(spark, "label_rejects").collect()}
    assert reasons["W3"].startswith("does not match the response schema: 'maybe' is not one of")
    assert reasons["W9"] == f"unknown item_ref: not in sheet widgets version {snapshot.version}"
    again = merge_labels(spark, lakehouse, spec, snapshot)
    assert again.appended == 0
    assert lakehouse.row_count("canonical_labels") == 2 and lakehouse.row_count("label_rejects") == 2


def test_two_merges_of_one_partition_at_once_append_each_label_once(spark, lakehouse, setup):
    """Defect: two canonical_labels runs of one partition at once both read "no current label" and both appended
    (60 labels twice). The merge now appends under the table lock: the second finds the first's labels."""
    import threading

    spec, snapshot = setup
    write_labels(spark, lakehouse, [("W1", "ok", "qa"), ("W2", "not_ok", "qa"), ("W4", "ok", "qa")])
    start, results = threading.Barrier(2), []

    def merge() -> None:
        start.wait()
        results.append(merge_labels(spark, lakehouse, spec, snapshot).appended)

    threads = [threading.Thread(target=merge) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = lakehouse.read(spark, "canonical_labels").select("item_ref", "version").collect()
    assert sorted(results) == [0, 3]
    assert sorted((r["item_ref"], r["version"]) for r in rows) == [("W1", 1), ("W2", 1), ("W4", 1)]


def test_an_import_table_of_another_layout_is_refused_naming_every_problem_and_writes_nothing(spark, lakehouse, setup):
    spec, snapshot = setup
    wrong = spark.createDataFrame(
        [("W1", '"ok"', "qa", "training")], "item_ref string, label string, labeled_by string, allowed_uses string"
    )
    lakehouse.write("factory.widget_labels", wrong)
    with pytest.raises(LabelTableError) as refused:
        merge_labels(spark, lakehouse, spec, snapshot)
    text = str(refused.value)
    assert text.startswith("ontos.factory.widget_labels@v0, the labels.import_table of use case widgets (")
    assert str(spec.path) in text and text.endswith("nothing was written.")
    for problem in (
        "missing column label_data",
        "missing column confidence",
        "missing column labeled_at",
        "missing column prohibited_uses",
        "column allowed_uses is string, not array<string>",
    ):
        assert problem in text
    assert "label_data string (JSON text of a value the template's response_schema accepts" in text
    assert not lakehouse.exists("canonical_labels") and not lakehouse.exists("label_rejects")


def test_precedence_review_over_expert_over_import_with_history(spark, lakehouse, home, setup):
    spec, snapshot = setup
    write_labels(spark, lakehouse, [("W1", "ok", "qa"), ("W2", "ok", "qa")])
    merge_labels(spark, lakehouse, spec, snapshot)
    (inbox_dir(lakehouse, "widgets") / "expert.csv").write_text("item_ref,label,confidence\nW1,not_ok,0.95\n")
    merge_labels(spark, lakehouse, spec, snapshot)
    assert labels_by_item(spark, lakehouse)["W1"]["source"] == "expert"

    register_template(lakehouse, compile_template(spec))
    template = compile_template(spec)
    build_training_sheet(spark, lakehouse, spec, snapshot, template)
    record_decisions(lakehouse, spec, [Decision("W1", "edit", '"ok"', "checked the photo")], "rita")
    merge_labels(spark, lakehouse, spec, snapshot)
    w1 = labels_by_item(spark, lakehouse)["W1"]
    assert (w1["source"], w1["labeled_by"], json.loads(w1["label_data"]), w1["version"]) == ("review", "rita", "ok", 3)
    history = lakehouse.read(spark, "canonical_labels").filter(F.col("item_ref") == "W1").orderBy("version").collect()
    assert [(h["version"], h["source"]) for h in history] == [(1, "import"), (2, "expert"), (3, "review")]
    assert labels_by_item(spark, lakehouse)["W2"]["version"] == 1  # untouched keys get no new version


def test_conflicts_are_surfaced_flagged_and_resolved_by_review(spark, lakehouse, setup):
    spec, snapshot = setup
    write_labels(spark, lakehouse, [("W1", "ok", "qa"), ("W2", "ok", "qa"), ("W2", "not_ok", "vendor_b")])
    result = merge_labels(spark, lakehouse, spec, snapshot)
    assert result.conflicts == 1
    conflict = lakehouse.read(spark, "label_conflicts").first()
    assert (conflict["item_ref"], conflict["status"], json.loads(conflict["label_values"])) == (
        "W2",
        "open",
        ['"not_ok"', '"ok"'],
    )
    register_template(lakehouse, compile_template(spec))
    template = compile_template(spec)
    sheet = build_training_sheet(spark, lakehouse, spec, snapshot, template)
    assert sheet.by_status == {"auto_approved": 1, "flagged": 1, "pending": 2}

    record_decisions(lakehouse, spec, [Decision("W2", "edit", '"not_ok"')], "rita")
    assert merge_labels(spark, lakehouse, spec, snapshot).conflicts == 0
    sheet = build_training_sheet(spark, lakehouse, spec, snapshot, template)
    assert sheet.by_status == {"auto_approved": 1, "edited": 1, "pending": 2}


def test_phi_tags_prohibit_training_unless_consent(spark, lakehouse, home, widgets_dir):
    text = (widgets_dir / "widgets.yaml").read_text().replace("category: text}", "category: text, tags: [phi]}")
    (widgets_dir / "widgets.yaml").write_text(text)
    spec = widgets_spec(widgets_dir)
    write_widgets(spark, lakehouse, good_widgets(home))
    snapshot = build_sheet(spark, lakehouse, spec)
    write_labels(spark, lakehouse, [("W1", "ok", "qa"), ("W2", "ok", "qa")])
    merge_labels(spark, lakehouse, spec, snapshot)
    for label in labels_by_item(spark, lakehouse).values():
        assert list(label["prohibited_uses"]) == ["training"]
        assert list(label["allowed_uses"]) == ["evaluation", "serving"]


def test_the_current_sheet_holds_back_labelled_items_it_now_prohibits_and_the_checks_see_it(
    spark, lakehouse, home, widgets_dir
):
    """Labels merged while training was allowed; then the sheet prohibits it (a PHI tag here, a consent revoked in
    the invoice demo) and only sheet and training sheet are materialized again: the rows are held back at once,
    and the checks, which compare the rows with the current sheet, would name the old rows as leaks."""
    from ontos_pipeline.label.labels import prohibited_for_training

    spec = widgets_spec(widgets_dir)
    write_widgets(spark, lakehouse, good_widgets(home))
    snapshot = build_sheet(spark, lakehouse, spec)
    write_labels(spark, lakehouse, [("W1", "ok", "qa"), ("W2", "ok", "qa")])
    merge_labels(spark, lakehouse, spec, snapshot)
    template = compile_template(spec)
    register_template(lakehouse, template)
    first = build_training_sheet(spark, lakehouse, spec, snapshot, template)
    before = current_training_sheet(spark, lakehouse, spec.training_sheet_id)
    assert {r["item_ref"]: list(r["prohibited_uses"]) for r in before.collect()}["W1"] == []

    text = (widgets_dir / "widgets.yaml").read_text().replace("category: text}", "category: text, tags: [phi]}")
    (widgets_dir / "widgets.yaml").write_text(text)
    spec = widgets_spec(widgets_dir)
    snapshot = build_sheet(spark, lakehouse, spec)  # canonical_labels is not run again
    sheet_df = lakehouse.read(spark, snapshot.table)
    stale = {r["item_ref"] for r in prohibited_for_training(before, sheet_df, spec, snapshot).collect()}
    assert {"W1", "W2"} <= stale  # what the blocking checks count as leaked if the old rows were still trainable
    again = build_training_sheet(spark, lakehouse, spec, snapshot, compile_template(spec))
    assert again.created and again.version != first.version  # only the usage changed: a new version all the same
    after = {r["item_ref"]: r for r in current_training_sheet(spark, lakehouse, spec.training_sheet_id).collect()}
    for item in ("W1", "W2"):
        assert "training" in after[item]["prohibited_uses"] and "training" not in after[item]["allowed_uses"]


def test_label_files_report_exact_lines(tmp_path):
    csv = tmp_path / "a.csv"
    csv.write_text("item_ref,label,confidence\nW1,ok,0.9\nW2,ok,high\n,ok,1\n")
    rows = parse_label_file(csv, "enum")
    assert [r["error"] for r in rows] == [
        None,
        "a.csv:3: confidence must be a number between 0 and 1, got 'high'",
        "a.csv:4: missing item_ref",
    ]
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text('{"item_ref": "W1", "label": "ok"}\n\nnot json\n[1]\n')
    rows = parse_label_file(jsonl, "enum")
    assert rows[0]["label_data"] == '"ok"' and rows[0]["error"] is None
    assert [r["error"] for r in rows[1:]] == [
        "b.jsonl:3: not JSON (Expecting value)",
        "b.jsonl:4: expected a JSON object",
    ]
    header = tmp_path / "c.csv"
    header.write_text("item,value\nW1,ok\n")
    assert parse_label_file(header, "enum")[0]["error"] == "c.csv:1: the header lacks item_ref, label"


def test_review_decisions_survive_rematerialization_and_bad_ones_write_nothing(spark, lakehouse, setup, tmp_path):
    spec, snapshot = setup
    write_labels(spark, lakehouse, [("W1", "ok", "qa"), ("W2", "ok", "qa")])
    merge_labels(spark, lakehouse, spec, snapshot)
    template = compile_template(spec)
    register_template(lakehouse, template)
    first = build_training_sheet(spark, lakehouse, spec, snapshot, template)
    record_decisions(
        lakehouse,
        spec,
        [Decision("W1", "reject", comment="photo blurred"), Decision("W2", "approve")],
        "rita",
        based_on_version=first.version,
    )
    write_labels(spark, lakehouse, [("W1", "ok", "qa"), ("W2", "ok", "qa"), ("W3", "not_ok", "qa")])
    merge_labels(spark, lakehouse, spec, snapshot)
    second = build_training_sheet(spark, lakehouse, spec, snapshot, template)
    statuses = {
        r["item_ref"]: r["status"] for r in current_training_sheet(spark, lakehouse, spec.training_sheet_id).collect()
    }
    assert statuses == {"W1": "rejected", "W2": "approved", "W3": "auto_approved", "W4": "pending"}
    assert second.version != first.version
    assert build_training_sheet(spark, lakehouse, spec, snapshot, template).created is False
    assert lakehouse.row_count("qa_pairs") == 4

    from ontos_pipeline.generate.review import ReviewError, read_decisions

    cases = [
        ([Decision("W9", "approve")], None, "item 'W9': not in training sheet widgets__widget_ok"),
        ([Decision("W4", "approve")], None, "has no proposed response to approve"),
        ([Decision("W1", "edit", "perfect")], None, "invalid label: does not match the response schema"),
        ([Decision("W1", "approve")], first.version, f"stale decision: you reviewed version {first.version}"),
    ]
    before = lakehouse.row_count("label_reviews")
    for decisions, version, message in cases:
        with pytest.raises(ReviewError, match=re.escape(message)):
            record_decisions(lakehouse, spec, decisions, "rita", based_on_version=version)
    bulk = tmp_path / "bulk.csv"
    bulk.write_text("item_ref,decision,label\nW1,approve,\nW3,edit,ok\nW4,edit,meh\n")
    with pytest.raises(ReviewError, match=r"bulk\.csv:4: item 'W4': invalid label: does not match"):
        record_decisions(lakehouse, spec, read_decisions(bulk), "rita")
    assert lakehouse.row_count("label_reviews") == before  # all or nothing
