"""The bad-input table: hostile or broken input across use-case YAML, templates, label files, review decisions,
feedback and invocations. Each gets an error naming the problem (never a traceback, never a 500) and, where the
input reaches a command that writes, changes no table (Delta versions and row counts) and no inbox file. The HTTP
side of invocations and feedback (status codes, the inference log) is in test_serving; here the same parsers run
in process. No Spark: every case answers in milliseconds."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from ontos_pipeline.cli import main
from ontos_pipeline.generate.template import TemplateError, compile_template
from ontos_pipeline.platform.invocations import BadRequest, parse_json, records_of
from ontos_pipeline.platform.lakehouse import LocalLakehouse
from ontos_pipeline.specs import SpecError, load_use_case
from ontos_pipeline_tests.conftest import WIDGETS_SPEC
from ontos_pipeline_tests.test_cli import state  # noqa: F401 - the fixture: a home with tables, no Spark

BASE = yaml.safe_load(WIDGETS_SPEC)


def _doc(change) -> dict:
    doc = copy.deepcopy(BASE)
    change(doc)
    return doc


def _set(path: str, value):
    def change(doc):
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[int(last) if last.isdigit() else last] = value

    return change


COLUMNS = "sheet.columns"
SPEC_CASES = {  # name -> (a document, or YAML text, or bytes) and what the error must say
    "unknown top-level field": (_doc(_set("owner_team", "x")), "owner_team: unknown field; expected one of"),
    "unknown column field": (_doc(_set(f"{COLUMNS}.1.unit", "mm")), "sheet.columns[1].unit: unknown field"),
    "name is a number": (_doc(_set("name", 7)), "name: expected"),
    "table name with a path": (
        _doc(_set("sheet.sources.widgets.table", "../etc/passwd")),
        "'../etc/passwd' is not a table name",
    ),
    "table name with SQL": (
        _doc(_set("sheet.sources.widgets.table", "factory.w; DROP TABLE x")),
        "is not a table name",
    ),
    "join on an unknown column": (_doc(_set("sheet.joins.0.right", "makers.nope")), "nope"),
    "join with an unknown source": (_doc(_set("sheet.joins.0.source", "vendors")), "vendors"),
    "unknown category": (_doc(_set(f"{COLUMNS}.1.category", "fuzzy")), "fuzzy"),
    "range with NaN": (_doc(_set(f"{COLUMNS}.1.range", [float("nan"), 5])), "finite numbers"),
    "range upside down": (_doc(_set(f"{COLUMNS}.1.range", [5, 1])), "min <= max"),
    "range on text": (_doc(_set(f"{COLUMNS}.4.range", [0, 1])), "a range needs an integer or double column"),
    "invalid JSON schema": (_doc(_set("template.response_schema", {"type": "nope"})), "not a valid JSON Schema"),
    "$ref response schema": (
        _doc(_set("template.response_schema", {"$ref": "#/$defs/x", "$defs": {"x": {"enum": ["a", "b"]}}})),
        "$ref is not supported",
    ),
    "unsupported response kind": (_doc(_set("template.response_schema", {"type": "boolean"})), "unsupported"),
    "mixed key types": ("name: widgets\n1: one\n", "line 2: the key 1 is not a name"),
    "duplicate keys": ("name: widgets\nname: gadgets\n", "line 2: the key 'name' is given twice (also on line 1)"),
    "invalid YAML": ("name: [widgets\n", "invalid YAML"),
    "not UTF-8": (b"name: widg\xe9ts\n", "line 1: not UTF-8 text (byte 0xe9)"),
    "a list, not a mapping": ("- name: widgets\n", "expected a mapping"),
}


@pytest.mark.parametrize("case", sorted(SPEC_CASES))
def test_a_bad_use_case_file_is_a_spec_error_naming_the_field(tmp_path, case):
    content, expected = SPEC_CASES[case]
    path = tmp_path / "case.yaml"
    if isinstance(content, dict):
        path.write_text(yaml.safe_dump(content), encoding="utf-8")
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    with pytest.raises(SpecError) as err:
        load_use_case(path)
    assert str(err.value).startswith(str(path)) and expected in str(err.value), str(err.value)


def test_a_utf8_bom_and_yaml_merge_keys_still_load(tmp_path):
    path = tmp_path / "case.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + WIDGETS_SPEC.encode())  # as Windows editors save it
    assert load_use_case(path).name == "widgets"
    merged = WIDGETS_SPEC.replace(
        "labels: {label_type: widget_ok, import_table: factory.widget_labels}",
        "defaults: &labels {label_type: widget_ok, import_table: factory.other}\n"
        "labels: {<<: *labels, import_table: factory.widget_labels}",
    ).replace("name: widgets\n", "name: widgets\n", 1)
    doc = yaml.safe_load(merged)
    del doc["defaults"]  # not a spec field: the anchor only shows that overriding a merged key is no duplicate
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    assert load_use_case(path).labels.import_table == "factory.widget_labels"
    from ontos_pipeline.specs import _StrictLoader

    assert yaml.load(merged, Loader=_StrictLoader)["labels"]["import_table"] == "factory.widget_labels"


TEMPLATE_CASES = {
    "nested range loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "loops more than 100,000 times",
    ),
    "loops over a value": ("{% for a in color * 400 %}{% for b in color * 400 %}.{% endfor %}{% endfor %}", "loops"),
    "a huge repetition": ("{{ 'x' * 10**10 }}", "exceeds 1,000,000 items"),
    "a huge power": ("{{ 7 ** 100000 }}", "too large a number"),
    "a huge output": ("{% for i in range(90000) %}{{ 'y' * 20 }}{% endfor %}", "renders more than 1,000,000"),
    "a sandbox escape": ("{{ color.__class__ }}", "not allowed"),
    "an unknown variable": ("{{ colour }}", "names no sheet column"),
    "a syntax error": ("{% for %}", "syntax error"),
    "recursion": ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "fails on"),
}


@pytest.mark.parametrize("case", sorted(TEMPLATE_CASES))
def test_a_bad_template_is_refused_at_compile_time_naming_the_part(tmp_path, case):
    source, expected = TEMPLATE_CASES[case]
    path = tmp_path / "case.yaml"
    path.write_text(yaml.safe_dump(_doc(_set("template.prompt", source))), encoding="utf-8")
    with pytest.raises(TemplateError) as err:
        compile_template(load_use_case(path))
    assert err.value.part == "prompt" and expected in err.value.problem, err.value.problem


INVOCATION_CASES = {
    "malformed JSON": (b'{"inputs": [', "malformed JSON at line 1"),
    "NaN": (b'{"inputs": [{"size_mm": NaN}]}', "NaN is not a JSON number"),
    "Infinity": (b'{"inputs": [{"size_mm": Infinity}]}', "Infinity is not a JSON number"),
    "1e400": (b'{"inputs": [{"size_mm": 1e400}]}', "out of the range of a double"),
    "lone surrogate": (b'{"inputs": [{"notes": "\\ud800"}]}', "lone surrogate"),
    "deep nesting": (b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested deeper than 64"),
    "not UTF-8": (b'{"inputs": [{"notes": "\xff"}]}', "not UTF-8"),
    "no shape": (b'{"records": [{"size_mm": 1}]}', "expected exactly one of"),
    "two shapes": (b'{"inputs": [{}], "dataframe_records": [{}]}', "expected exactly one of"),
    "a record that is a list": (b'{"dataframe_records": [[1, 2]]}', "is not an object"),
    "too many rows": (json.dumps({"inputs": [{"size_mm": 1}] * 1001}).encode(), "the limit is 1000"),
    "list column names": (b'{"dataframe_split": {"columns": [["a"]], "data": [[1]]}}', "distinct column names"),
    "ragged split": (b'{"dataframe_split": {"columns": ["a", "b"], "data": [[1]]}}', "must be a list of 2 values"),
    "list item_ref": (b'{"inputs": [{"item_ref": ["a"]}]}', "'item_ref' must be a string"),
    "empty": (b'{"inputs": []}', "holds no records"),
}


@pytest.mark.parametrize("case", sorted(INVOCATION_CASES))
def test_a_bad_invocation_body_is_a_4xx_naming_the_problem(case):
    body, expected = INVOCATION_CASES[case]
    with pytest.raises(BadRequest) as err:
        records_of(parse_json(body), 1000)
    assert 400 <= err.value.status < 500 and expected in err.value.message, err.value.message


def _snapshot(home: Path) -> dict[str, object]:
    """Every table's (Delta version, rows) and every inbox file, to compare before and after a refused command."""
    lakehouse = LocalLakehouse.under(home)
    tables = sorted(p.name for p in (home / "tables" / "ontos" / "workbench").iterdir() if p.is_dir())
    return {
        "tables": {t: (lakehouse.version(t), len(lakehouse.records(t))) for t in tables},
        "files": sorted(str(p.relative_to(home)) for p in (home / "files").rglob("*") if p.is_file())
        if (home / "files").exists()
        else [],
    }


BIG = "x" * 140_000
COMMAND_CASES = {  # name -> (file name, content, arguments after the file, what the error says)
    "feedback: not UTF-8": ("fb.jsonl", b'{"item_ref": "W1", "rating": "up", "comment": "\xe9"}\n', "not UTF-8"),
    "feedback: NaN correction": ("fb.jsonl", b'{"item_ref": "W1", "correction": NaN}\n', "NaN is not a JSON number"),
    "feedback: deep nesting": (
        "fb.jsonl",
        b'{"item_ref": "W1", "correction": ' + b"[" * 100 + b"]" * 100 + b"}\n",
        "nested",
    ),
    "feedback: lone surrogate": (
        "fb.jsonl",
        b'{"item_ref": "W1", "rating": "up", "comment": "\\udfff"}\n',
        "surrogate",
    ),
    "feedback: unknown field": (
        "fb.jsonl",
        b'{"item_ref": "W1", "rating": "up", "stars": 5}\n',
        "unknown field 'stars'",
    ),
    "feedback: list author": (
        "fb.jsonl",
        b'{"item_ref": "W1", "rating": "up", "author": ["a"]}\n',
        "'author' must be a string",
    ),
    "feedback: not JSON": ("fb.jsonl", b'{"item_ref": "W1", "rating": "up"}\nrating=up\n', "fb.jsonl:2: not JSON"),
    "feedback: invalid correction": ("fb.jsonl", b'{"item_ref": "W1", "correction": "great"}\n', "REJECTED"),
    "review: not UTF-8": ("d.csv", b"item_ref,decision\nW\xe91,approve\n", "d.csv:2: not UTF-8"),
    "review: no item_ref header": ("d.csv", b"item,decision\nW1,approve\n", "the header must name an item_ref"),
    "review: unknown extension": ("d.txt", b"W1\n", "use a .csv or .jsonl file"),
    "review: not JSON": ("d.jsonl", b"{item_ref: W1}\n", "d.jsonl:1: not JSON"),
    "review: huge CSV field": ("d.csv", f"item_ref,comment\nW1,{BIG}\n".encode(), "field larger than field limit"),
    "labels: not UTF-8": ("l.csv", b"item_ref,label\nW1,\xff\n", "not UTF-8"),
    "labels: huge CSV field": ("l.csv", f"item_ref,label\nW1,{BIG}\n".encode(), "field larger than field limit"),
    "labels: nested allowed_uses": (
        "l.jsonl",
        b'{"item_ref": "W1", "label": "ok", "allowed_uses": [["training"]]}\n',
        "allowed_uses must be a list of",
    ),
    "labels: NaN label": ("l.jsonl", b'{"item_ref": "W1", "label": NaN}\n', "NaN is not a JSON number"),
    "labels: not in the schema": ("l.csv", b"item_ref,label\nW1,maybe\n", "does not match the response schema"),
    "labels: header without label": ("l.csv", b"item_ref,answer\nW1,ok\n", "the header lacks label"),
    "labels: confidence out of range": ("l.csv", b"item_ref,label,confidence\nW1,ok,7\n", "confidence must be"),
}


def _command(name: str, path: Path) -> list[str]:
    kind = name.split(":")[0]
    if kind == "feedback":
        return ["feedback", "widgets", "--file", str(path)]
    if kind == "review":
        return ["review", "approve", "widgets", "--file", str(path)]
    return ["labels", "import", str(path), "--use-case", "widgets"]


@pytest.mark.parametrize("case", sorted(COMMAND_CASES))
def test_a_bad_file_given_to_a_command_is_refused_naming_the_line_and_changes_nothing(
    state,  # noqa: F811 - the fixture imported above
    tmp_path,
    monkeypatch,
    capsys,
    case,
):
    for key in ("ONTOS_HOME", "ONTOS_USE_CASES_DIR", "ONTOS_USER"):
        monkeypatch.setenv(key, state[key])
    file_name, content, expected = COMMAND_CASES[case]
    path = tmp_path / file_name
    path.write_bytes(content)
    home = Path(state["ONTOS_HOME"])
    before = _snapshot(home)
    code = main(_command(case, path))
    out = capsys.readouterr()
    assert code != 0 and expected in out.out + out.err, out.out + out.err
    assert "Traceback" not in out.err
    if case != "feedback: invalid correction":  # kept, as rejected feedback (never dropped): one row more
        assert _snapshot(home) == before
    else:
        after = _snapshot(home)
        assert after["tables"]["feedback"][1] == 1 and after["files"] == before["files"]


def test_a_refused_rollback_is_an_error_line_not_a_traceback(state, monkeypatch, capsys):  # noqa: F811
    """`ontos endpoint rollback` with nothing to roll back raised DeployError through the CLI (a traceback)."""
    for key in ("ONTOS_HOME", "ONTOS_USE_CASES_DIR", "ONTOS_USER"):
        monkeypatch.setenv(key, state[key])
    before = _snapshot(Path(state["ONTOS_HOME"]))
    assert main(["endpoint", "rollback", "widgets"]) == 1
    err = capsys.readouterr().err
    assert "error: widgets has no champion" in err and err.rstrip().endswith("nothing was changed")
    assert "Traceback" not in err
    assert _snapshot(Path(state["ONTOS_HOME"])) == before
