"""Pre-labelling and bulk approval on a real code location: once the retrain job has served a champion, the next
training sheet proposes a response (with the champion's confidence) for every unlabelled item; `ontos review approve
--proposed` accepts the confident ones in one commit (a dry run writes nothing), and approved proposals become
canonical labels that reach the training export, while unapproved ones never do."""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from ontos_pipeline.cli import main
from ontos_pipeline.data.sheet import published_sheet
from ontos_pipeline.generate.prelabel import champion_proposer, no_champion, response_text
from ontos_pipeline.generate.training_sheet import TRAINABLE_STATUSES, current_training_sheet, trainable
from ontos_pipeline.improve import gaps
from ontos_pipeline.label.labels import current_labels
from ontos_pipeline.pipeline import RETRAIN
from ontos_pipeline.platform.lakehouse import LocalLakehouse
from ontos_pipeline.platform.model_store import CHAMPION, local_store
from ontos_pipeline.resources.targets import orchestrator_resources
from ontos_pipeline_tests.conftest import WIDGETS_SPEC
from ontos_pipeline_tests.kinds import items, labelled_kind
from ontos_pipeline_tests.test_cli import _qa, ontos
from ontos_pipeline_tests.test_export import qa_frame, qa_row

LABELLED, UNLABELLED = 160, 40
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    """An enum use case with 160 labelled and 40 unlabelled items, after one retrain run served champion v1."""
    root = tmp_path_factory.mktemp("prelabel")
    frame = items("enum", LABELLED + UNLABELLED, 1)
    settings, defs, lakehouse, spec = labelled_kind(spark, root, "enum", frame, frame.iloc[:LABELLED])
    cases, home = root / "use_cases", root / "home"
    store = local_store(home)
    assert champion_proposer(store, spec.name, list(frame.columns))[0] is None  # no champion: nothing to load
    instance = DagsterInstance.ephemeral()
    first = defs.resolve_job_def(RETRAIN).execute_in_process(
        partition_key=spec.name, instance=instance, run_config=QUIET
    )
    assert first.success and str(store.version(spec.name, CHAMPION).version) == "1"
    return {
        "spec": spec,
        "settings": settings,
        "defs": defs,
        "instance": instance,
        "lakehouse": lakehouse,
        "store": store,
        "home": home,
        "cases": cases,
        "unlabelled": set(frame["item_ref"].iloc[LABELLED:]),
        "before": first.asset_materializations_for_node("training_sheet")[0].metadata,
    }


def run(world, *keys: str):
    """Materialize `keys` of the use case's partition with the local target's resources."""
    result = materialize(
        list(world["defs"].assets),
        selection=list(keys),
        partition_key=world["spec"].name,
        resources=orchestrator_resources(world["settings"]),
        instance=world["instance"],
        run_config=QUIET,
    )
    assert result.success
    return {key: result.asset_materializations_for_node(key)[0].metadata for key in keys}


def sheet_rows(spark, world) -> dict[str, dict]:
    qa = current_training_sheet(spark, world["lakehouse"], world["spec"].training_sheet_id)
    return {r["item_ref"]: r.asDict() for r in qa.collect()}  # 300 test rows


def cli(world, monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setenv("ONTOS_HOME", str(world["home"]))
    monkeypatch.setenv("ONTOS_USE_CASES_DIR", str(world["cases"]))
    monkeypatch.setenv("ONTOS_USER", "rita")
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_after_a_champion_every_unlabelled_item_gets_its_proposal_and_confidence(spark, world):
    before = world["before"]
    assert before["by_source"].value == {"canonical_label": LABELLED, "none": UNLABELLED}  # the retrain's own build
    assert before["model_proposals"].value == 0 and "no champion" in before["proposed_by"].value
    store = world["store"]  # the registry file is read without MLflow to learn that a use case has no champion
    assert no_champion(store, "another_case") and not no_champion(store, world["spec"].name)

    meta = run(world, "training_sheet")["training_sheet"]
    assert meta["new_version"].value is True and meta["model_proposals"].value == UNLABELLED
    assert meta["proposed_by"].value == "unlabelled items proposed by champion version 1"
    rows = sheet_rows(spark, world)
    assert all(r["response"] is not None for r in rows.values())  # no item without a response
    proposed = {ref: r for ref, r in rows.items() if r["response_source"] == "model"}
    assert set(proposed) == world["unlabelled"]
    assert {r["status"] for r in proposed.values()} == {"pending"}  # a person still decides
    assert all(r["confidence"] is None for ref, r in rows.items() if ref not in proposed)

    # the champion's own answers, and the same numbers annotation tasks rank by (gap candidates, scored)
    spec, lakehouse = world["spec"], world["lakehouse"]
    model = store.load(store.version_uri(spec.name, "1"))
    sheet_table = published_sheet(lakehouse, spec).table
    scored = gaps.scored_candidates(spark, lakehouse, spec, sheet_table, model).set_index("item_ref")
    assert set(scored.index) == set(proposed)
    for ref, row in proposed.items():
        assert row["confidence"] == pytest.approx(scored.loc[ref, gaps.CONFIDENCE], abs=1e-9)
        assert row["response"] == response_text(scored.loc[ref, "prediction"])
    assert len({round(r["confidence"], 6) for r in proposed.values()}) > 1  # real per-item confidences

    qa = current_training_sheet(spark, lakehouse, spec.training_sheet_id)
    assert trainable(qa).filter("response_source = 'model'").count() == 0  # a proposal is never a training label
    assert run(world, "training_sheet")["training_sheet"]["new_version"].value is False  # same champion, same sheet


def test_bulk_approval_dry_run_counts_then_approves_once_and_reaches_the_export(spark, world, monkeypatch, capsys):
    spec, lakehouse = world["spec"], world["lakehouse"]
    run(world, "training_sheet")
    proposals = {ref: r for ref, r in sheet_rows(spark, world).items() if r["response_source"] == "model"}
    ranked = sorted(r["confidence"] for r in proposals.values())
    threshold = ranked[len(ranked) // 2]
    expected = {ref for ref, r in proposals.items() if r["confidence"] >= threshold}
    assert 0 < len(expected) < len(proposals)  # both sides of the threshold are exercised

    args = ("review", "approve", spec.name, "--proposed", "--min-confidence", str(threshold))
    code, out = cli(world, monkeypatch, capsys, *args, "--dry-run")
    assert code == 0 and f"dry run: {len(expected)} pending model proposal(s)" in out, out
    assert "nothing was recorded" in out and "confidence" in out and "proposed" in out
    assert not lakehouse.exists("label_reviews")  # a dry run writes nothing

    code, out = cli(world, monkeypatch, capsys, *args)
    assert code == 0 and f"approved {len(expected)} model proposal(s)" in out, out
    reviews = lakehouse.records("label_reviews")
    assert lakehouse.version("label_reviews") == 1  # created empty, then every decision in one append
    assert {r["item_ref"] for r in reviews} == expected and len(reviews) == len(expected)
    assert all(r["decision"] == "approve" and r["reviewer"] == "rita" for r in reviews)
    assert all(r["label_data"] == proposals[r["item_ref"]]["response"] for r in reviews)  # the value approved

    code, out = cli(world, monkeypatch, capsys, *args)  # again, before any re-materialization
    assert code == 0 and f"{len(expected)} proposal(s) at or above the threshold already have a decision" in out
    assert len(lakehouse.records("label_reviews")) == len(expected)  # no duplicate decisions

    meta = run(world, "canonical_labels", "training_sheet", "training_export")
    labels = {r["item_ref"]: r for r in current_labels(spark, lakehouse, spec.name, spec.labels.label_type).collect()}
    for ref in expected:
        assert (labels[ref]["source"], labels[ref]["labeled_by"]) == ("review", "rita")
        assert labels[ref]["label_data"] == proposals[ref]["response"]
    assert not set(proposals) - expected & set(labels)  # unapproved proposals are no labels
    rows = sheet_rows(spark, world)
    assert {(rows[ref]["status"], rows[ref]["response_source"]) for ref in expected} == {("approved", "review")}
    assert {rows[ref]["status"] for ref in set(proposals) - expected} == {"pending"}
    directory = Path(meta["training_export"]["directory"].value)
    exported = {
        json.loads(line)["item_ref"]
        for split in directory.joinpath("index").glob("*.jsonl")
        for line in split.read_text(encoding="utf-8").splitlines()
    }
    assert expected <= exported and not (set(proposals) - expected) & exported
    assert len(exported) == LABELLED + len(expected)  # every label is trainable here (no PHI)

    code, out = cli(world, monkeypatch, capsys, *args)  # approved rows are no longer pending proposals
    assert code == 0 and "nothing left to approve" in out
    assert len(lakehouse.records("label_reviews")) == len(expected)

    # a later edit replaces an approval: the edited value wins, without a review-vs-review conflict
    ref = sorted(expected)[0]
    other = next(v for v in ('"low"', '"mid"', '"high"') if v != proposals[ref]["response"])
    code, out = cli(world, monkeypatch, capsys, "review", "edit", spec.name, ref, "--label", other)
    assert code == 0, out
    run(world, "canonical_labels")
    labels = {r["item_ref"]: r for r in current_labels(spark, lakehouse, spec.name, spec.labels.label_type).collect()}
    assert (labels[ref]["label_data"], labels[ref]["conflict"]) == (other, False)
    assert not lakehouse.records("label_conflicts", {"item_ref": ref})


def test_bulk_approval_refuses_bad_input_and_rows_without_a_proposal_keep_a_clear_error(tmp_path, monkeypatch, capsys):
    home, cases = tmp_path / "home", tmp_path / "use_cases"
    cases.mkdir()
    (cases / "widgets.yaml").write_text(WIDGETS_SPEC, encoding="utf-8")
    lakehouse = LocalLakehouse.under(home)
    proposal = {**_qa("W2", "pending", '"ok"'), "response_source": "model", "confidence": 0.95}
    lakehouse.append_records("qa_pairs", [_qa("W1", "pending", None), proposal, _qa("W3", "auto_approved", '"ok"')])
    world = {"home": home, "cases": cases}
    for args, message in [
        (("--proposed", "--min-confidence", "1.5"), "--min-confidence must be between 0 and 1, got 1.5"),
        (("--proposed",), "--proposed needs --min-confidence"),
        (("W2", "--proposed", "--min-confidence", "0.5"), "give no ITEM_REF, --file or --version"),
        (("--min-confidence", "0.5"), "--min-confidence and --dry-run go with --proposed"),
        (("W1",), "has no proposed response to approve; use edit with the correct label, or wait until a champion"),
    ]:
        code, out = cli(world, monkeypatch, capsys, "review", "approve", "widgets", *args)
        assert code == 2 and message in out, (args, out)
    assert not lakehouse.exists("label_reviews")

    env = {**os.environ, "ONTOS_HOME": str(home), "ONTOS_USE_CASES_DIR": str(cases), "ONTOS_USER": "rita"}
    code, out, heavy = ontos(env, "review", "approve", "widgets", "--proposed", "--min-confidence", "0.96")
    assert code == 0 and "nothing left to approve" in out and not lakehouse.exists("label_reviews")
    assert not {"pyspark", "dagster", "mlflow"} & set(heavy.split(",")), heavy  # bulk approval is delta-rs only
    args = ("review", "approve", "widgets", "--proposed", "--min-confidence", "0.9")
    code, out = cli(world, monkeypatch, capsys, *args, "--dry-run")
    assert code == 0 and "dry run: 1 pending model proposal(s)" in out and re.search(r"0\.9-1\.0\s+1", out), out
    assert not lakehouse.exists("label_reviews")
    code, out = cli(world, monkeypatch, capsys, *args)
    assert code == 0 and "approved 1 model proposal(s)" in out
    [decision] = lakehouse.records("label_reviews")
    assert (decision["item_ref"], decision["decision"], decision["label_data"]) == ("W2", "approve", '"ok"')


def test_the_gate_never_trains_on_a_model_proposal_whatever_its_status(spark):
    statuses = (*TRAINABLE_STATUSES, "pending", "rejected")
    sources = ("model", "review", "canonical_label", None)
    rows = [
        qa_row(f"I{i:02d}", status=status, response_source=source)
        for i, (status, source) in enumerate(itertools.product(statuses, sources))
    ]
    got = {r["item_ref"] for r in trainable(qa_frame(spark, rows)).select("item_ref").collect()}
    assert got == {r["item_ref"] for r in rows if r["status"] in TRAINABLE_STATUSES and r["response_source"] != "model"}
