"""IMPROVE assets: the observed `feedback` source, the gap report and the annotation tasks it drives."""

from __future__ import annotations

from collections import Counter

from dagster import (
    AssetExecutionContext,
    DataVersion,
    DataVersionsByPartition,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    observable_source_asset,
)

from ontos_pipeline.data.sheet import published_sheet
from ontos_pipeline.improve import gaps as gaps_stage
from ontos_pipeline.improve import tasks as tasks_stage
from ontos_pipeline.improve.retrain import CursorEntry, arrivals, feedback_data_version
from ontos_pipeline.label.feedback import FEEDBACK
from ontos_pipeline.metadata import md_counts, md_table
from ontos_pipeline.notify.messages import tasks_notice
from ontos_pipeline.resources.base import (
    LakehouseResource,
    ModelStoreResource,
    NotifierResource,
    SparkResource,
    UseCasesResource,
)
from ontos_pipeline.steps import Step, step_inputs


def feedback_source(partitions: PartitionsDefinition):
    """The observable `feedback` source: its data version per use case is the feedback high-water mark."""

    @observable_source_asset(
        name=FEEDBACK,
        group_name="improve",
        partitions_def=partitions,
        required_resource_keys={"lakehouse", "use_cases"},
        description="Thumbs up/down, corrections and comments on served answers (POST /feedback, "
        "`ontos feedback`). Its data version per use case is the feedback "
        "high-water mark (seq); the retrain sensor reports it on every change.",
    )
    def feedback(context) -> DataVersionsByPartition:
        lakehouse, specs = context.resources.lakehouse.get(), context.resources.use_cases.all()
        if not lakehouse.readable_by_orchestrator:
            raise RuntimeError(
                "observing feedback reads the feedback table in the Dagster process, which works on "
                "the local target only; on Databricks the feedback table is read by the steps"
            )
        return DataVersionsByPartition(
            {
                name: DataVersion(feedback_data_version(arrivals(lakehouse, spec, CursorEntry()).last_seq))
                for name, spec in specs.items()
            }
        )

    return feedback


def gap_report(
    context: AssetExecutionContext,
    spark: SparkResource,
    lakehouse: LakehouseResource,
    use_cases: UseCasesResource,
    mlflow_store: ModelStoreResource,
) -> MaterializeResult:
    spec, session, lh = step_inputs(context, use_cases, spark, lakehouse)
    store = mlflow_store.get()
    sheet = published_sheet(lh, spec)
    evaluation = gaps_stage.latest_evaluation(session, lh, store, spec.name)
    version, model = gaps_stage.scoring_model(store, spec.name, evaluation)
    inputs = gaps_stage.GapInputs(
        evaluation,
        gaps_stage.latest_drift_report(lh, spec.name),
        version,
        gaps_stage.scored_candidates(session, lh, spec, sheet.table, model),
    )
    found = gaps_stage.find_gaps(session, lh, spec, inputs, sheet.table)
    report = gaps_stage.report_id(spec.name, context.run_id)
    gaps_stage.record_gaps(lh, spec.name, found, report)
    by_kind = Counter(g.kind for g in found)
    return MaterializeResult(
        metadata={
            "report_id": report,
            "gaps": len(found),
            "gaps_by_kind": md_counts({k: by_kind.get(k, 0) for k in gaps_stage.KINDS}),
            "top_gaps": MetadataValue.md(gaps_stage.markdown(found)),
            "scored_with": f"model version {version} (the champion, else the evaluated version)"
            if version
            else "no model",
            "evaluation": f"{evaluation.evaluation_id} (version {evaluation.model_version}, {evaluation.role})"
            if evaluation
            else "none",
            "monitoring_report": inputs.monitoring.report_id if inputs.monitoring else "none",
            "items_scored": 0 if inputs.scored is None or version is None else len(inputs.scored),
            "not_assessed": MetadataValue.json(inputs.notes),
        }
    )


def annotation_tasks(
    context: AssetExecutionContext,
    spark: SparkResource,
    lakehouse: LakehouseResource,
    use_cases: UseCasesResource,
    mlflow_store: ModelStoreResource,
    notifier: NotifierResource,
) -> MaterializeResult:
    spec, session, lh = step_inputs(context, use_cases, spark, lakehouse)
    store = mlflow_store.get()
    sheet = published_sheet(lh, spec)
    version, model = gaps_stage.scoring_model(
        store, spec.name, gaps_stage.latest_evaluation(session, lh, store, spec.name)
    )
    scored = gaps_stage.scored_candidates(session, lh, spec, sheet.table, model)
    stored = gaps_stage.stored_gaps(lh, spec.name)
    plan = tasks_stage.record_tasks(lh, spec, stored, scored)
    kinds = {g["gap_id"]: g["kind"] for g in stored}
    open_tasks = [t for t in tasks_stage.list_tasks(lh, spec.name) if t["status"] in tasks_stage.OPEN]
    if plan.tasks:  # one notice for the new tasks: how many, and the most urgent
        notice = tasks_notice(notifier.dagster_url, context.run_id, spec.name, plan.tasks, len(open_tasks))
        notifier.get(context.log).notify(spec.notifications, notice)
    new_tasks = [
        {
            "task": t["task_id"],
            "priority": t["priority"],
            "gap kind": kinds.get(t["gap_id"], "?"),
            "items": len(t["item_refs"]),
            "first items": ", ".join(t["item_refs"][:5]),
        }
        for t in plan.tasks
    ]
    return MaterializeResult(
        metadata={
            "tasks_created": len(plan.tasks),
            "open_tasks": len(open_tasks),
            "gaps": len(stored),
            "items_chosen_by": f"lowest confidence of model version {version}"
            if version
            else "no model: candidate order (stable hash), not uncertainty",
            "new_tasks": md_table(new_tasks, ["task", "priority", "gap kind", "items", "first items"]),
            "skipped_gaps": MetadataValue.json({f"{kinds.get(g, '?')} {g}": why for g, why in plan.skipped.items()}),
            "next": "uv run ontos tasks list " + spec.name,
        }
    )


GAP_REPORT = Step(
    "gap_report",
    gap_report,
    group="improve",
    deps=("model_evaluation", "monitoring_report"),
    kinds=frozenset({"spark", "delta"}),
    description="Gaps of the model, each with evidence numbers, a severity and a suggested action: worst evaluation "
    "slices, answers with low training support, low-confidence regions of unlabelled or disputed items, "
    "drifted inputs of the latest monitoring report, items and answers with repeated negative feedback. "
    "Replaces the use case's rows of gap_reports.",
)

ANNOTATION_TASKS = Step(
    "annotation_tasks",
    annotation_tasks,
    group="improve",
    deps=("gap_report",),
    kinds=frozenset({"delta"}),
    description="One annotation task per actionable gap, listing the unlabelled or disputed items in the gap's region "
    "with the lowest model confidence first; a gap with an open task gets no second one. People work "
    "them with `ontos tasks list|show|start|complete`.",
)
