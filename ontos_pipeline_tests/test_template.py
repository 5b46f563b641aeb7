"""Prompt templates: compile against the sheet, render in the sandbox, version, register in the templates table."""

from __future__ import annotations

import copy
import math
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ontos_pipeline.generate.template import (
    PLACEHOLDERS,
    CompiledTemplate,
    TemplateError,
    compile_template,
    current_template,
    register_template,
)
from ontos_pipeline.specs import UseCaseSpec, load_use_case, load_use_cases
from ontos_pipeline_tests.conftest import DEMO_USE_CASES

DEMOS = load_use_cases(DEMO_USE_CASES)
BASE = yaml.safe_load((DEMO_USE_CASES / "defect_detection.yaml").read_text())


def spec_with(tmp_path: Path, name: str = "case.yaml", **template) -> UseCaseSpec:
    """The defect-detection spec with template fields replaced, written to tmp_path and loaded."""
    doc = copy.deepcopy(BASE)
    doc["template"].update(template)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return load_use_case(path)


def sample_row(spec: UseCaseSpec, **values) -> dict:
    return {**{c.name: PLACEHOLDERS[c.type] for c in spec.sheet.columns}, "item_ref": "B-1", **values}


@pytest.mark.parametrize("use_case", sorted(DEMOS))
def test_every_demo_template_compiles_and_renders_two_messages(use_case):
    spec = DEMOS[use_case]
    compiled = compile_template(spec)
    assert compiled.use_case == use_case and compiled.label_type == spec.labels.label_type
    assert compiled.variables and set(compiled.variables.values()) <= {c.name for c in spec.sheet.columns}
    renderer = pickle.loads(pickle.dumps(pickle.loads(pickle.dumps(compiled)).renderer()))  # as on an executor
    messages = renderer.messages(sample_row(spec))
    assert [m["role"] for m in messages] == ["system", "user"]
    assert all(m["content"].strip() and "{{" not in m["content"] for m in messages)
    assert messages[0]["content"] == spec.template.system_prompt.strip()


ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ product_family['__class__'] }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{% endfor %}",
    "{% if false %}{{ self._TemplateReference__context }}{% endif %}",
    "{{ product_family|attr('__class__') }}",
    "{{ product_family['_' ~ '_class__'] }}",  # built at run time: caught by the trial render
    "{{ '{0.__class__}'.format(product_family) }}",
    "{% set seen = [] %}{{ seen.append(product_family) }}",  # the immutable sandbox: no mutation
]


@pytest.mark.parametrize("escape", ESCAPES)
def test_sandbox_escapes_fail_and_name_the_line(tmp_path, escape):
    spec = spec_with(tmp_path, prompt=f"Board {{{{ product_family }}}}.\n{escape}\nWhich defect?")
    with pytest.raises(TemplateError, match=r"^template 'pcb_defect_triage' \(.*case\.yaml\) prompt line 2: ") as err:
        compile_template(spec)
    assert err.value.part == "prompt" and err.value.line == 2
    assert "not allowed" in err.value.problem or "sandbox" in err.value.problem


def test_system_prompt_is_a_template_under_the_same_rules(tmp_path):
    with pytest.raises(TemplateError, match=r"system_prompt line 1: access to '__class__' is not allowed"):
        compile_template(spec_with(tmp_path, system_prompt="{{ ''.__class__ }}"))
    compiled = compile_template(spec_with(tmp_path, system_prompt="Engineer for {{ plant }}."))
    assert compiled.variables["plant"] == "plant"
    spec = spec_with(tmp_path, system_prompt="Engineer for {{ plant }}.")
    assert compiled.renderer().render(sample_row(spec, plant="Lyon"))[0] == "Engineer for Lyon."


def test_missing_column_names_the_variable_the_line_and_the_column(tmp_path):
    spec = spec_with(tmp_path, prompt="Board {{ product_family }}\n\nColour: {{ board_colour }}")
    with pytest.raises(
        TemplateError,
        match=r"prompt line 3: variable 'board_colour' names no sheet column: the sheet "
        r"has no column 'board_colour' \(sheet columns: item_ref, image, .*\)",
    ):
        compile_template(spec)
    spec = spec_with(tmp_path, prompt="Board {{ family }}\n{{ operator_notes }}", variables={"family": "revision"})
    columns = [c.name for c in spec.sheet.columns if c.name not in ("revision", "operator_notes")]
    with pytest.raises(
        TemplateError,
        match=r"prompt line 1: variable 'family' is mapped to column 'revision': the "
        r"sheet has no column 'revision'",
    ):
        compile_template(spec, sheet_columns=columns)


def test_syntax_error_names_the_line(tmp_path):
    with pytest.raises(TemplateError, match=r"prompt line 3: syntax error: .*fix the Jinja2 syntax"):
        compile_template(spec_with(tmp_path, prompt="Board {{ product_family }}\nok\n{{ line_id }"))
    with pytest.raises(TemplateError, match=r"prompt line 2: syntax error: No filter named 'shout'"):
        compile_template(spec_with(tmp_path, prompt="Board\n{{ product_family | shout }}"))


def test_a_template_that_cannot_render_a_typed_row_fails_at_compile_time(tmp_path):
    with pytest.raises(
        TemplateError,
        match=r"prompt line 2: fails on a sample row of typed placeholder values: "
        r"TypeError",
    ):
        compile_template(spec_with(tmp_path, prompt="Board\n{{ product_family + 1 }}"))
    with pytest.raises(TemplateError, match=r"prompt line 1: 'str object' has no attribute 'shape'"):
        compile_template(spec_with(tmp_path, prompt="{{ image.shape }}"))


def test_renamed_variables_render_their_sheet_column(tmp_path):
    spec = spec_with(
        tmp_path,
        prompt="{{ family }} / {{ family | upper }} at {{ temp | round(1) }} C",
        variables={"family": "product_family", "temp": "solder_temp_c"},
    )
    compiled = compile_template(spec)
    assert compiled.variables == {"family": "product_family", "temp": "solder_temp_c"}
    user = compiled.renderer().render(sample_row(spec, product_family="Hx", solder_temp_c=251.26))[1]
    assert user == "Hx / HX at 251.3 C"


def test_missing_values_render_as_n_a(tmp_path):
    spec = spec_with(
        tmp_path, prompt="{{ product_family }}|{{ solder_temp_c }}|{{ inspected_at }}|{{ line_id }}", variables={}
    )
    renderer = compile_template(spec).renderer()
    row = sample_row(spec, product_family=None, solder_temp_c=math.nan, inspected_at=pd.NaT, line_id=pd.NA)
    assert renderer.render(row)[1] == "n/a|n/a|n/a|n/a"


def test_row_values_are_data_not_code(tmp_path):
    spec = spec_with(tmp_path, prompt="Notes: {{ operator_notes }}")
    hostile = "{{ 7*7 }} {% for c in ''.__class__.__mro__ %}{{ c }}{% endfor %} {{ cycler.__init__.__globals__ }}"
    user = compile_template(spec).renderer().render(sample_row(spec, operator_notes=hostile))[1]
    assert user == f"Notes: {hostile}"


def test_render_errors_on_real_rows_name_the_line_and_the_item(tmp_path):
    spec = spec_with(tmp_path, prompt="Board\n{{ solder_temp_c | round(1) }}")
    renderer = compile_template(spec).renderer()
    with pytest.raises(TemplateError, match=r"prompt line 2: fails on row item_ref='B-1': TypeError"):
        renderer.render(sample_row(spec, solder_temp_c=None))
    with pytest.raises(TemplateError, match=r"the row has no column 'solder_temp_c'"):
        renderer.render({"item_ref": "B-1"})


def test_version_is_a_stable_content_hash(tmp_path):
    spec = spec_with(tmp_path)
    compiled = compile_template(spec)
    assert len(compiled.version) == 20 and compile_template(spec) == compiled
    code = (
        "from ontos_pipeline.specs import load_use_case; from ontos_pipeline.generate.template import "
        f"compile_template; print(compile_template(load_use_case({str(spec.path)!r})).version)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == compiled.version  # another process, another PYTHONHASHSEED
    changed = spec_with(tmp_path, prompt=spec.template.prompt.replace("Which defect", "What defect"))
    assert compile_template(changed).version != compiled.version
    renamed = spec_with(
        tmp_path, prompt=spec.template.prompt.replace("{{ image }}", "{{ picture }}"), variables={"picture": "image"}
    )
    assert compile_template(renamed).version != compiled.version


def test_register_is_idempotent_and_a_new_version_archives_the_old(spark, lakehouse, tmp_path):
    assert current_template(lakehouse, "defect_detection") is None
    v1 = compile_template(spec_with(tmp_path))
    assert register_template(lakehouse, v1, run_id="run-1") is True
    table_version = lakehouse.version("templates")
    assert register_template(lakehouse, v1) is False
    assert lakehouse.version("templates") == table_version  # nothing written
    rows = lakehouse.read(spark, "templates").collect()
    assert len(rows) == 1 and rows[0]["status"] == "published" and rows[0]["template_id"] == "pcb_defect_triage"
    assert current_template(lakehouse, "defect_detection") == v1

    v2 = compile_template(spec_with(tmp_path, prompt="Board {{ product_family }}: which defect?"))
    assert register_template(lakehouse, v2) is True
    rows = {r["version"]: r for r in lakehouse.read(spark, "templates").collect()}
    assert {v: r["status"] for v, r in rows.items()} == {v1.version: "archived", v2.version: "published"}
    created = {v: r["created_at"] for v, r in rows.items()}
    current = current_template(lakehouse, "defect_detection")
    assert current == v2 and isinstance(current, CompiledTemplate)
    assert current.renderer().render({"product_family": "Hx"})[1] == "Board Hx: which defect?"

    assert register_template(lakehouse, v1) is False  # rolling back republishes, keeps created_at
    rows = {r["version"]: r for r in lakehouse.read(spark, "templates").collect()}
    assert {v: r["status"] for v, r in rows.items()} == {v1.version: "published", v2.version: "archived"}
    assert {v: r["created_at"] for v, r in rows.items()} == created
    assert current_template(lakehouse, "defect_detection") == v1


def test_renderer_runs_inside_spark_map_in_pandas(spark, tmp_path):
    spec = spec_with(
        tmp_path,
        prompt="{{ product_family }} board, {{ component_count }} parts, notes {{ notes }}",
        variables={"notes": "operator_notes"},
    )
    compiled = compile_template(spec)
    df = spark.createDataFrame(
        [("B-1", "Hx", 12, "{{ 7*7 }}"), ("B-2", "Lx", None, None)],
        "item_ref string, product_family string, component_count long, operator_notes string",
    )

    def render(frames):
        renderer = compiled.renderer()  # once per partition
        for frame in frames:  # integer columns with nulls arrive as float64: restore them (12, not 12.0)
            rows = frame.astype({"component_count": "Int64"}).to_dict("records")
            users = [renderer.render(row)[1] for row in rows]
            yield pd.DataFrame({"item_ref": frame["item_ref"], "user": users})

    got = {r["item_ref"]: r["user"] for r in df.mapInPandas(render, "item_ref string, user string").collect()}
    assert got == {"B-1": "Hx board, 12 parts, notes {{ 7*7 }}", "B-2": "Lx board, n/a parts, notes n/a"}
