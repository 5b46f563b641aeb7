"""README command 1, end to end: `ontos demo` runs every use case and records it in the persistent instance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter
from deltalake import DeltaTable

from ontos_pipeline_tests.test_definitions import DEMO

ROOT = Path(__file__).resolve().parent.parent


def test_demo_materializes_every_use_case_into_the_persistent_instance(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "ONTOS_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    result = subprocess.run([sys.executable, "-m", "ontos_pipeline.cli", "demo", "--rows", "120"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout[result.stdout.index("use case"):].splitlines()
    rows = {line.split()[0]: line.split() for line in table[2:] if line.strip() and line.split()[0] in DEMO}
    assert sorted(rows) == DEMO
    for cells in rows.values():
        assert cells[1] == "120", cells  # items
        assert cells[3] == "100.0%", cells  # labelled
        auto, pending, rejected, flagged = (int(cells[i]) for i in (4, 6, 8, 10))
        assert auto + pending + rejected + flagged == 120 and auto > 100, cells
        train, val, test = (int(cells[i]) for i in (11, 13, 15))
        assert train > val > 0 and test > 0, cells
        assert cells[16] in ("10/10", "9/10"), cells  # only the non-blocking conflict check may warn
    invoice = rows["invoice_extraction"]
    assert invoice[-2] == "invoice_text"  # PHI column found and tagged
    exported = sum(int(invoice[i]) for i in (11, 13, 15))
    assert exported < 0.8 * 120  # items of patients without consent are never exported

    instance = DagsterInstance.from_config(str(home / "dagster"))
    try:
        runs = instance.get_runs(RunsFilter(tags={"ontos/command": "demo"}))
        assert sorted(r.tags["dagster/partition"] for r in runs) == DEMO
        assert {r.status for r in runs} == {DagsterRunStatus.SUCCESS}
        materialized = instance.get_materialized_partitions(AssetKey("sheet"))
        assert materialized == set(DEMO)
    finally:
        instance.dispose()

    # PHI governance: every exported invoice belongs to a patient who consented to training.
    tables = home / "tables" / "ontos" / "workbench"
    sheet = DeltaTable(str(next(tables.glob("sheet_invoice_extraction_*")))).to_pandas()
    consent = dict(zip(sheet["item_ref"], sheet["consent_training"], strict=True))
    exported = [json.loads(line)["item_ref"] for f in (home / "files" / "exports" / "invoice_extraction").glob(
        "*/index/*.jsonl") for line in f.read_text().splitlines()]
    assert exported and all(consent[ref] for ref in exported)
    assert sum(not c for c in consent.values()) > 0  # there were invoices to hold back

    # The review round trip from a shell: an edit shows up in the next materialization.
    item = sorted(ref for ref, c in consent.items() if c)[0]
    label = {"provider": "Reviewed Clinic", "invoice_date": "2024-02-03", "total_amount": 10.5, "cpt_codes": ["99213"]}
    edit = subprocess.run([sys.executable, "-m", "ontos_pipeline.cli", "review", "edit", "invoice_extraction", item,
                           "--label", json.dumps(label), "--reviewer", "rita"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert edit.returncode == 0 and "recorded 1 decision(s)" in edit.stdout, edit.stderr[-2000:]
    dagster = Path(sys.executable).parent / "dagster"
    run = subprocess.run([str(dagster), "asset", "materialize", "-m", "ontos_pipeline.definitions", "--select",
                          "canonical_labels,training_sheet,training_export", "--partition", "invoice_extraction"],
                         cwd=tmp_path, env={**env, "DAGSTER_HOME": str(home / "dagster")}, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    qa = DeltaTable(str(tables / "qa_pairs")).to_pandas()
    row = qa[(qa["item_ref"] == item) & (qa["training_sheet_id"] == "invoice_extraction__invoice_fields")].iloc[0]
    assert (row["status"], row["response_source"], json.loads(row["response"])) == ("edited", "review", label)
    labels = DeltaTable(str(tables / "canonical_labels")).to_pandas()
    assert labels[(labels["item_ref"] == item)].sort_values("version")["source"].tolist() == ["import", "review"]
