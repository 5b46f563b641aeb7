"""Use-case specs: the demo files load; every kind of mistake is reported with the file and the field path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from ontos_pipeline.specs import SpecError, load_use_case, load_use_cases
from ontos_pipeline_tests.conftest import DEMO_USE_CASES

BASE = yaml.safe_load((DEMO_USE_CASES / "defect_detection.yaml").read_text())


def test_all_seven_demo_use_cases_load_with_their_response_kinds():
    specs = load_use_cases(DEMO_USE_CASES)
    assert {name: s.template.response_kind for name, s in specs.items()} == {
        "anomaly_detection": "enum",
        "calibration_insights": "text",
        "defect_detection": "enum",
        "document_extraction": "object",
        "invoice_extraction": "object",
        "predictive_maintenance": "enum",
        "remaining_useful_life": "number",
    }
    assert any(s.sheet.joins for s in specs.values())
    invoice = specs["invoice_extraction"]
    assert invoice.sheet.consent_column == "consent_training"
    assert "phi" in invoice.sheet.column("invoice_text").tags
    defect = specs["defect_detection"]
    assert [c.name for c in defect.sheet.columns_of("image")] == ["image"]
    assert defect.sheet.column("solder_temp_c").range == (150.0, 350.0)


def write(tmp_path: Path, doc: dict, name: str = "case.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def mutated(change) -> dict:
    doc = copy.deepcopy(BASE)
    change(doc)
    return doc


def set_path(doc: dict, dotted: list, value) -> None:
    target = doc
    for key in dotted[:-1]:
        target = target[key]
    target[dotted[-1]] = value


CASES = [
    (
        "unknown join column",
        lambda d: set_path(d, ["sheet", "joins", 0, "left"], "inspections.boardid"),
        "sheet.joins[0].left",
        "unknown column 'boardid' in source 'inspections'",
    ),
    (
        "join from unknown source",
        lambda d: set_path(d, ["sheet", "joins", 0, "source"], "suppliers"),
        "sheet.joins[0].source",
        "unknown source 'suppliers'",
    ),
    (
        "join key types differ",
        lambda d: set_path(d, ["sheet", "sources", "boards", "columns", "board_id"], "integer"),
        "sheet.joins[0]",
        "join keys have different types",
    ),
    (
        "unknown category",
        lambda d: set_path(d, ["sheet", "columns", 2, "category"], "numerical"),
        "sheet.columns[2].category",
        "expected one of text, numeric, categorical, image, metadata",
    ),
    (
        "unknown type",
        lambda d: set_path(d, ["sheet", "sources", "boards", "columns", "plant"], "varchar"),
        "sheet.sources.boards.columns.plant",
        "unknown type 'varchar'",
    ),
    (
        "column from unknown column",
        lambda d: set_path(d, ["sheet", "columns", 1, "from"], "inspections.picture"),
        "sheet.columns[1].from",
        "unknown column 'picture'",
    ),
    (
        "bad response schema",
        lambda d: set_path(d, ["template", "response_schema"], {"type": "strng"}),
        "template.response_schema.type",
        "not a valid JSON Schema",
    ),
    (
        "unsupported response schema",
        lambda d: set_path(d, ["template", "response_schema"], {"type": "array"}),
        "template.response_schema",
        "unsupported response schema",
    ),
    (
        "bad range",
        lambda d: set_path(d, ["sheet", "columns", 2, "range"], [300, 100]),
        "sheet.columns[2].range",
        "min <= max",
    ),
    (
        "values on a number",
        lambda d: set_path(d, ["sheet", "columns", 2, "values"], ["a"]),
        "sheet.columns[2].values",
        "allowed values need a string column",
    ),
    (
        "missing item_ref",
        lambda d: d["sheet"].__setitem__("columns", d["sheet"]["columns"][1:]),
        "sheet.columns",
        "a column named 'item_ref'",
    ),
    ("unknown top-level field", lambda d: d.__setitem__("trainig", {}), "trainig", "unknown field"),
    (
        "split does not add up",
        lambda d: d["training"].__setitem__("split", {"train": 0.8, "val": 0.1, "test": 0.2}),
        "training.split",
        "add up to 1",
    ),
    (
        "bad table name",
        lambda d: set_path(d, ["sheet", "sources", "boards", "table"], "acme raw.boards; drop"),
        "sheet.sources.boards.table",
        "is not a table name",
    ),
    ("missing prompt", lambda d: d["template"].pop("prompt"), "template.prompt", "is required"),
    ("source never joined", lambda d: d["sheet"].__setitem__("joins", []), "sheet.joins", "never joined"),
    ("wrong field type", lambda d: set_path(d, ["synthetic", "rows"], "many"), "synthetic.rows", "expected an integer"),
    (
        "gate metric of another kind",
        lambda d: set_path(d, ["training", "gate"], {"metric": "r2", "minimum": 0.5}),
        "training.gate.metric",
        "unknown value 'r2'; expected one of accuracy, macro_f1",
    ),
    (
        "a fixed gate tolerance (replaced by the bootstrap interval)",
        lambda d: set_path(d, ["training", "gate"], {"metric": "macro_f1", "minimum": 0.5, "tolerance": 0.02}),
        "training.gate.tolerance",
        "no longer takes a fixed tolerance",
    ),
    (
        "negative search trials",
        lambda d: d["training"].__setitem__("search", {"trials": -1}),
        "training.search.trials",
        "expected 0 to 500 trials",
    ),
    (
        "bad endpoint name",
        lambda d: d.__setitem__("serving", {"endpoint_name": "my endpoint!"}),
        "serving.endpoint_name",
        "is not an endpoint name",
    ),
    (
        "p-value out of range",
        lambda d: d.__setitem__("monitoring", {"drift": {"p_value": 1.5}}),
        "monitoring.drift.p_value",
        "expected a share between 0 and 1, got 1.5",
    ),
    (
        "unknown monitoring field",
        lambda d: d.__setitem__("monitoring", {"max_latency_ms": 10}),
        "monitoring.max_latency_ms",
        "unknown field",
    ),
]


@pytest.mark.parametrize(("label", "change", "field", "expected"), CASES, ids=[c[0] for c in CASES])
def test_errors_name_file_field_and_expectation(tmp_path, label, change, field, expected):
    path = write(tmp_path, mutated(change))
    with pytest.raises(SpecError) as err:
        load_use_case(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {field}: "), message
    assert expected in message, message


def test_serving_and_monitoring_settings_have_defaults_and_overrides(tmp_path):
    plain = load_use_case(write(tmp_path, mutated(lambda d: None)))
    assert (plain.serving.endpoint_name, plain.monitoring.psi_threshold, plain.monitoring.min_accuracy) == (
        plain.name,
        0.2,
        None,
    )
    tuned = load_use_case(
        write(
            tmp_path,
            mutated(
                lambda d: d.update(
                    serving={"endpoint_name": "defects-v2", "max_rows_per_request": 50},
                    monitoring={"window_minutes": 15, "drift": {"psi": 0.25}, "min_accuracy": 0.8},
                )
            ),
            "tuned.yaml",
        )
    )
    assert (tuned.serving.endpoint_name, tuned.serving.max_rows_per_request) == ("defects-v2", 50)
    m = tuned.monitoring
    assert (m.window_minutes, m.psi_threshold, m.p_value, m.min_accuracy) == (15, 0.25, 0.05, 0.8)


def test_duplicate_use_case_names_are_rejected_naming_both_files(tmp_path):
    write(tmp_path, BASE, "a.yaml")
    second = write(tmp_path, BASE, "b.yaml")
    with pytest.raises(SpecError) as err:
        load_use_cases(tmp_path)
    assert str(err.value).startswith(f"{second}: name: duplicate use-case name 'defect_detection'")
    assert "a.yaml" in str(err.value)


def test_invalid_yaml_reports_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nsheet: [unclosed\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"broken.yaml: line \d+, column \d+: invalid YAML"):
        load_use_case(path)


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(SpecError, match="no use-case files"):
        load_use_cases(tmp_path)


def test_the_field_reference_is_generated_from_the_one_field_list_and_is_current():
    from ontos_pipeline.spec_fields import FIELDS
    from ontos_pipeline.spec_reference import default_text, reference_markdown

    doc = Path(__file__).resolve().parents[1] / "docs" / "use-case-reference.md"
    assert doc.read_text(encoding="utf-8") == reference_markdown(), (
        "docs/use-case-reference.md is stale: uv run ontos specs --reference > docs/use-case-reference.md"
    )
    defaults = {f.path: default_text(f) for f in FIELDS}
    assert defaults["training.image_size"] == "8" and defaults["monitoring.drift.psi"] == "0.2"
    assert defaults["training.split"] == "{'train': 0.8, 'val': 0.1, 'test': 0.1}"


def test_a_field_the_reference_does_not_list_is_unknown_to_the_loader(tmp_path):
    raw = yaml.safe_load((DEMO_USE_CASES / "remaining_useful_life.yaml").read_text(encoding="utf-8"))
    raw["training"]["image_side"] = 16  # a plausible typo of training.image_size
    path = tmp_path / "rul.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(SpecError, match=r"training\.image_side: unknown field; expected one of gate, image_size"):
        load_use_case(path)
