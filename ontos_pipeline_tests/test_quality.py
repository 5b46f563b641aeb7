"""Each sheet rule passes on good data and catches its bad case with a description that says where and what."""

from __future__ import annotations

import pytest

from ontos_pipeline.data import quality
from ontos_pipeline.data.sheet import assemble_sheet, read_sources
from ontos_pipeline_tests.widgets import good_widgets, widgets_spec, write_widgets


@pytest.fixture
def spec(widgets_dir):
    return widgets_spec(widgets_dir)


def sheet_of(spark, lakehouse, spec, widgets, schema=None):
    write_widgets(spark, lakehouse, widgets, **({"schema": schema} if schema else {}))
    return assemble_sheet(spec, read_sources(spark, lakehouse, spec))


def test_good_widgets_pass_every_rule(spark, lakehouse, home, spec):
    sheet = sheet_of(spark, lakehouse, spec, good_widgets(home))
    assert quality.check_frame_rules(sheet, spec).passed
    assert quality.check_unique_keys(sheet).passed
    assert quality.check_images(sheet, spec).passed
    assert quality.check_phi_declared(quality.scan_phi(sheet, ["notes"]), spec).passed


def test_duplicate_item_ref_is_caught_with_examples(spark, lakehouse, home, spec):
    widgets = good_widgets(home)
    sheet = sheet_of(spark, lakehouse, spec, [*widgets, widgets[1], widgets[1]])
    outcome = quality.check_unique_keys(sheet)
    assert not outcome.passed
    assert outcome.metadata["duplicate_keys"] == 1
    assert "1 item_ref values occur more than once, e.g. W2 (x3)" in outcome.description


def test_duplicate_dimension_keys_multiply_items_and_are_caught(spark, lakehouse, home, spec):
    write_widgets(spark, lakehouse, good_widgets(home), makers=[("m1", "Acme"), ("m1", "Acme Corp"), ("m2", "G")])
    sheet = assemble_sheet(spec, read_sources(spark, lakehouse, spec))
    outcome = quality.check_unique_keys(sheet)
    assert not outcome.passed and "W1 (x2)" in outcome.description and "W3 (x2)" in outcome.description


def test_out_of_range_and_unknown_category_are_counted_per_column(spark, lakehouse, home, spec):
    widgets = good_widgets(home)
    widgets[0] = ("W1", 180.0, "green", *widgets[0][3:])
    widgets[1] = ("W2", -1.0, "blue", *widgets[1][3:])
    outcome = quality.check_frame_rules(sheet_of(spark, lakehouse, spec, widgets), spec)
    assert not outcome.passed
    by_column = {f["column"]: f for f in outcome.metadata["failures"]}
    assert by_column["size_mm"]["rows"] == 2
    assert by_column["color"]["rows"] == 1 and by_column["color"]["examples"] == ["W1 (color='green')"]
    assert "column 'size_mm' fails in_range(0.0, 100.0): 2 rows" in outcome.description
    assert str(spec.path) in outcome.description


def test_wrong_type_is_reported_with_both_types(spark, home, spec):
    rows = [(r[0], str(r[1]), *r[2:], "Acme") for r in good_widgets(home)]
    sheet = spark.createDataFrame(
        [(r[0], r[1], r[2], r[3], r[4], r[6]) for r in rows],
        "item_ref string, size_mm string, color string, photo string, notes string, maker string",
    )
    outcome = quality.check_frame_rules(sheet, spec)
    assert not outcome.passed
    assert "column 'size_mm' fails dtype" in outcome.description
    assert "the sheet stores string, the spec declares double" in outcome.description


def test_null_in_a_required_column_fails(spark, home, spec):
    sheet = spark.createDataFrame(
        [(None, 1.0, "red", None, None, None)],
        "item_ref string, size_mm double, color string, photo string, notes string, maker string",
    )
    assert not quality.check_frame_rules(sheet, spec).passed
    outcome = quality.check_unique_keys(sheet)
    assert not outcome.passed and "1 rows have no item_ref" in outcome.description


def test_missing_image_file_is_named(spark, lakehouse, home, spec):
    widgets = good_widgets(home)
    missing = str(home / "files" / "photos" / "gone.png")
    widgets[2] = (*widgets[2][:3], missing, *widgets[2][4:])
    outcome = quality.check_images(sheet_of(spark, lakehouse, spec, widgets), spec)
    assert not outcome.passed
    assert outcome.metadata["missing"] == {"photo": 1}
    assert f"column 'photo': 1 missing files, e.g. item_ref W3 ({missing})" in outcome.description


@pytest.mark.parametrize(
    ("note", "kind"),
    [
        ("call Jane back at (512) 555-0199", "phone"),
        ("sent by jane.doe@example.com", "email"),
        ("owner SSN 123-45-6789", "ssn"),
        ("John Smith, DOB: 1961-04-02", "date_of_birth"),
        ("John Smith born on March 3, 1958", "date_of_birth"),
    ],
)
def test_planted_phi_in_an_undeclared_column_fails_the_scan(spark, lakehouse, home, spec, note, kind):
    widgets = good_widgets(home)
    widgets[1] = (*widgets[1][:4], note, widgets[1][5])
    findings = quality.scan_phi(sheet_of(spark, lakehouse, spec, widgets), ["notes"])
    assert findings["notes"][kind] == {"rows": 1, "examples": ["W2"]}
    outcome = quality.check_phi_declared(findings, spec)
    assert not outcome.passed
    assert "column 'notes'" in outcome.description and "sheet.columns[4]" in outcome.description
    assert "tags: [phi]" in outcome.description


def test_phi_in_a_column_tagged_phi_passes_and_is_reported(spark, lakehouse, home, widgets_dir):
    text = (widgets_dir / "widgets.yaml").read_text().replace("category: text}", "category: text, tags: [phi]}")
    (widgets_dir / "widgets.yaml").write_text(text)
    spec = widgets_spec(widgets_dir)
    widgets = good_widgets(home)
    widgets[0] = (*widgets[0][:4], "patient mail: a@b.org", widgets[0][5])
    findings = quality.scan_phi(sheet_of(spark, lakehouse, spec, widgets), ["notes"])
    outcome = quality.check_phi_declared(findings, spec)
    assert outcome.passed and outcome.metadata["findings"] == {"notes": {"email": 1}}


def test_ordinary_numbers_and_dates_are_not_phi(spark, home):
    df = spark.createDataFrame(
        [("a", "Lot 2024-03-15, part AB-12345678, 3.3 V, ISO 9001:2015, rev 12-4")], "item_ref string, notes string"
    )
    assert quality.scan_phi(df, ["notes"]) == {}
