"""Bringing one's own data: `ontos data load` (files and image folders into typed tables), `ontos use-case init`
(a use case inferred from a table) and a label column as the labels, up to a trained champion."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ontos_pipeline.cli import main
from ontos_pipeline.data.loading import LoadError, load
from ontos_pipeline.data.scaffold import ScaffoldError, scaffold, write_scaffold
from ontos_pipeline.platform.lakehouse import read_delta
from ontos_pipeline.specs import SpecError, load_use_case

PENGUINS = Path(__file__).resolve().parents[1] / "examples" / "penguins.csv"


def rows(lakehouse, table: str) -> list[dict]:
    return sorted(read_delta(lakehouse.path(table)).to_pylist(), key=lambda r: r["item_ref"])


def png(color: tuple[int, int, int], size: int = 6) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_csv_becomes_a_typed_table_with_identifier_columns_and_row_number_keys(lakehouse, tmp_path):
    src = tmp_path / "plants.csv"
    src.write_text(
        'Plant ID,Height (cm),in bloom,planted,Note\nP1,12.5,true,2024-03-01,"tall, green"\nP2,NA,false,,\n',
        encoding="utf-8",
    )
    loaded = load(lakehouse, src, "raw.plants")
    assert loaded.columns == {
        "item_ref": "string",
        "plant_id": "string",
        "height_cm": "double",
        "in_bloom": "boolean",
        "planted": "date",
        "note": "string",
    }
    assert loaded.renamed["Height (cm)"] == "height_cm" and loaded.key == "row numbers"
    got = rows(lakehouse, "raw.plants")
    assert [r["item_ref"] for r in got] == ["plants-000001", "plants-000002"]
    assert got[0]["height_cm"] == 12.5 and got[1]["height_cm"] is None and got[0]["note"] == "tall, green"
    assert got[0]["in_bloom"] is True and str(got[0]["planted"]) == "2024-03-01"

    again = load(lakehouse, src, "raw.plants", key="Plant ID")  # a key column: item_ref is its value
    assert again.key == "plant_id" and [r["item_ref"] for r in rows(lakehouse, "raw.plants")] == ["P1", "P2"]


def test_bad_values_duplicate_keys_and_ragged_lines_are_all_named_and_nothing_is_written(lakehouse, tmp_path):
    src = tmp_path / "bad.csv"
    src.write_text("id,age,city\na,31,Oslo\nb,thirty,Rome\na,40,Nice\nc,22\n", encoding="utf-8")
    with pytest.raises(LoadError) as err:
        load(lakehouse, src, "raw.people", key="id", types={"age": "integer"})
    message = str(err.value)
    assert "line 5: 2 values for 3 columns" in message
    assert "line 3, column 'age': 'thirty' is not integer" in message
    assert "line 4: key 'a' of column 'id' is already on line 2" in message
    assert "nothing was written" in message
    assert not lakehouse.exists("raw.people")

    with pytest.raises(LoadError, match=r"--types age=number: unknown type"):
        load(lakehouse, src, "raw.people", types={"age": "number"})
    with pytest.raises(LoadError, match="is a workbench table"):
        load(lakehouse, PENGUINS, "canonical_labels")


def test_reloading_is_idempotent_and_upsert_replaces_by_key_and_adds_the_rest(lakehouse, tmp_path):
    src = tmp_path / "stock.jsonl"
    src.write_text('{"sku": "A", "qty": 1}\n{"sku": "B", "qty": 2}\n', encoding="utf-8")
    first = load(lakehouse, src, "raw.stock", key="sku")
    before = rows(lakehouse, "raw.stock")
    load(lakehouse, src, "raw.stock", key="sku")
    assert rows(lakehouse, "raw.stock") == before and first.rows == 2

    src.write_text('{"sku": "B", "qty": 5}\n{"sku": "C", "qty": 3}\n', encoding="utf-8")
    merged = load(lakehouse, src, "raw.stock", key="sku", mode="upsert")
    assert merged.rows == 3
    assert [(r["item_ref"], r["qty"]) for r in rows(lakehouse, "raw.stock")] == [("A", 1), ("B", 5), ("C", 3)]

    src.write_text('{"sku": "D", "qty": 1}\nnot json\n', encoding="utf-8")
    with pytest.raises(LoadError, match=r"line 2: not JSON"):
        load(lakehouse, src, "raw.stock", key="sku", mode="upsert")
    assert len(rows(lakehouse, "raw.stock")) == 3


def test_parquet_keeps_its_types_and_an_image_folder_gets_labels_metadata_and_stored_files(lakehouse, tmp_path):
    pq.write_table(pa.table({"item_ref": [1, 2], "score": [0.5, None], "ok": [True, False]}), tmp_path / "s.parquet")
    loaded = load(lakehouse, tmp_path / "s.parquet", "raw.scores")
    assert loaded.columns == {"item_ref": "string", "score": "double", "ok": "boolean"}
    assert [r["item_ref"] for r in rows(lakehouse, "raw.scores")] == ["1", "2"]

    folder = tmp_path / "leaves"
    for label, color in (("healthy", (0, 200, 0)), ("rust", (150, 70, 0))):
        (folder / label).mkdir(parents=True)
        for i in range(2):
            (folder / label / f"{i}.png").write_bytes(png(color))
    (folder / "metadata.csv").write_text("file,field\nhealthy/0.png,north\nrust/1.png,south\n", encoding="utf-8")
    loaded = load(lakehouse, folder, "raw.leaves")
    assert loaded.images == {"image": 4} and loaded.rows == 4
    got = rows(lakehouse, "raw.leaves")
    assert [(r["item_ref"], r["label"], r["field"]) for r in got] == [
        ("healthy/0", "healthy", "north"),
        ("healthy/1", "healthy", None),
        ("rust/0", "rust", None),
        ("rust/1", "rust", "south"),
    ]
    stored = Path(got[0]["image"])  # relative to the files folder: a copied home keeps finding it
    assert not stored.is_absolute() and stored.parts[0] == "images"
    assert (lakehouse.files_root / stored).read_bytes() == png((0, 200, 0))
    assert got[0]["image"] == got[1]["image"]  # content-addressed: equal images are stored once


def test_inline_and_path_image_cells_are_stored_and_bad_ones_named(lakehouse, tmp_path):
    (tmp_path / "a.png").write_bytes(png((255, 0, 0)))
    inline = "data:image/png;base64," + base64.b64encode(png((0, 0, 255))).decode()
    src = tmp_path / "photos.jsonl"
    lines = [{"id": "p1", "photo": "a.png"}, {"id": "p2", "photo": inline}]
    src.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    loaded = load(lakehouse, src, "raw.photos", key="id")
    assert loaded.images == {"photo": 2}
    got = {r["item_ref"]: r["photo"] for r in rows(lakehouse, "raw.photos")}
    root = lakehouse.files_root
    assert (root / got["p1"]).read_bytes() == png((255, 0, 0)) and (root / got["p2"]).read_bytes() == png((0, 0, 255))

    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    lines += [{"id": "p3", "photo": "missing.png"}, {"id": "p4", "photo": "broken.png"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    with pytest.raises(LoadError) as err:
        load(lakehouse, src, "raw.photos", key="id")
    assert re.search(r"line 3, column 'photo': no image file at '/.*/missing.png'", str(err.value))
    assert "line 4, column 'photo':" in str(err.value) and "is not a readable image" in str(err.value)
    assert set(got) == {r["item_ref"] for r in rows(lakehouse, "raw.photos")}  # the old table is untouched


def test_use_case_init_infers_a_valid_spec_and_refuses_what_it_cannot_infer(lakehouse, tmp_path):
    load(lakehouse, PENGUINS, "raw.penguins")
    out = tmp_path / "uc" / "penguins.yaml"
    result = scaffold(lakehouse, "penguins", "raw.penguins", out, label_column="species")
    write_scaffold(result)
    spec = load_use_case(out)
    assert spec.template.response_schema == {"type": "string", "enum": ["Adelie", "Chinstrap", "Gentoo"]}
    assert str(spec.labels.column) == "penguins.species"
    assert "species" not in [c.name for c in spec.sheet.columns]  # the label is not an input
    assert {c.name: c.category for c in spec.sheet.columns if c.name != "item_ref"} == {
        "island": "categorical",
        "bill_length_mm": "numeric",
        "bill_depth_mm": "numeric",
        "flipper_length_mm": "numeric",
        "body_mass_g": "numeric",
        "sex": "categorical",
        "year": "numeric",
    }
    with pytest.raises(ScaffoldError, match="exists; pass --force"):
        write_scaffold(result)
    mass = scaffold(lakehouse, "mass", "raw.penguins", tmp_path / "m.yaml", label_column="body_mass_g")
    assert mass.response == {"type": "integer"}
    with pytest.raises(ScaffoldError, match="say what to predict"):
        scaffold(lakehouse, "x", "raw.penguins", tmp_path / "x.yaml")
    with pytest.raises(ScaffoldError, match="has no label column 'kind'"):
        scaffold(lakehouse, "x", "raw.penguins", tmp_path / "x.yaml", label_column="kind")
    with pytest.raises(ScaffoldError, match="does not exist; load it first"):
        scaffold(lakehouse, "x", "raw.nothing", tmp_path / "x.yaml", number=True)


def test_a_label_column_that_is_also_an_input_or_not_in_the_primary_source_is_refused(lakehouse, tmp_path):
    load(lakehouse, PENGUINS, "raw.penguins")
    text = scaffold(lakehouse, "penguins", "raw.penguins", tmp_path / "p.yaml", label_column="species").text
    leaky = text.replace(
        "  - name: island\n",
        "  - name: species\n    from: penguins.species\n    type: string\n"
        "    category: categorical\n  - name: island\n",
    )
    (tmp_path / "leaky.yaml").write_text(leaky, encoding="utf-8")
    with pytest.raises(SpecError, match=r"labels.column: penguins.species is also the sheet column 'species'"):
        load_use_case(tmp_path / "leaky.yaml")


def test_from_a_csv_to_a_trained_champion_with_the_cli_only_then_the_moved_home_serves_rebuilds_and_retrains(
    tmp_path, monkeypatch, capsys
):
    """The README's "Bring your own data" commands, in process: load, init, specs, run; then `cp -a` of the home
    elsewhere (the old one deleted) keeps serving the champion, rebuilds its training data byte-identically and
    retrains."""
    home, use_cases = tmp_path / "home", tmp_path / "use_cases"
    monkeypatch.setenv("ONTOS_HOME", str(home))
    monkeypatch.setenv("ONTOS_USE_CASES_DIR", str(use_cases))
    shutil.copy(PENGUINS, tmp_path / "penguins.csv")
    assert main(["data", "load", str(tmp_path / "penguins.csv"), "--table", "raw.penguins"]) == 0
    assert main(["use-case", "init", "penguins", "--table", "raw.penguins", "--label-column", "species"]) == 0
    assert main(["specs"]) == 0
    capsys.readouterr()
    assert main(["run", "penguins"]) == 0
    out = capsys.readouterr().out
    assert "full_pipeline penguins: ok" in out and "344" in out and "passed" in out

    from ontos_pipeline.platform.model_store import CHAMPION
    from ontos_pipeline.settings import load_settings

    store = load_settings().local_model_store()
    champion = store.client().get_model_version_by_alias(store.model_name("penguins"), CHAMPION)
    import mlflow

    model = mlflow.pyfunc.load_model(f"models:/{store.model_name('penguins')}@{CHAMPION}")
    import pandas as pd

    gentoo = {"island": "Biscoe", "bill_length_mm": 47.5, "bill_depth_mm": 14.2, "flipper_length_mm": 217}
    frame = pd.DataFrame([{"item_ref": "new-1", **gentoo, "body_mass_g": 5200, "sex": "female", "year": 2009}])
    assert int(champion.version) == 1 and model.predict(frame)[0]["response"] == "Gentoo"

    moved = tmp_path / "elsewhere" / "home"
    shutil.copytree(home, moved, symlinks=True)
    shutil.rmtree(home)
    monkeypatch.setenv("ONTOS_HOME", str(moved))
    store = load_settings().local_model_store()
    assert str(home) not in store.client().get_run(champion.run_id).info.artifact_uri
    model = mlflow.pyfunc.load_model(f"models:/{store.model_name('penguins')}@{CHAMPION}")
    assert model.predict(frame)[0]["response"] == "Gentoo"
    capsys.readouterr()
    assert main(["rebuild-training-data", "--run-id", champion.run_id, "--out", str(tmp_path / "rebuilt")]) == 0
    assert "byte-identical" in capsys.readouterr().out
    assert main(["run", "penguins", "--job", "retrain"]) == 0
    assert "retrain penguins: ok" in capsys.readouterr().out
    versions = store.client().search_model_versions(f"name = '{store.model_name('penguins')}'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert all(str(home) not in v.source for v in versions)


def test_regenerating_the_demo_sources_keeps_rows_that_landed_since(lakehouse):
    from ontos_pipeline.data.sources import materialize_sources
    from ontos_pipeline_tests.conftest import DEMO_USE_CASES

    spec = load_use_case(DEMO_USE_CASES / "remaining_useful_life.yaml")
    materialize_sources(lakehouse, spec, rows=40)
    drifted = read_delta(lakehouse.path(f"{spec.primary_table}_drifted")).slice(0, 3)
    lakehouse.merge_arrow(spec.primary_table, drifted, keys=["item_ref"])  # new production data lands
    landed = sorted(drifted.column("item_ref").to_pylist())

    materialize_sources(lakehouse, spec, rows=30)  # regenerated, even smaller
    refs = [r["item_ref"] for r in rows(lakehouse, spec.primary_table)]
    assert len(refs) == 33 and sorted(r for r in refs if r in landed) == landed
    assert len(set(refs)) == len(refs)
    kept = {r["item_ref"]: r for r in rows(lakehouse, spec.primary_table) if r["item_ref"] in landed}
    assert kept == {r["item_ref"]: r for r in drifted.to_pylist()}  # unchanged, every column
