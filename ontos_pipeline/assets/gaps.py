"""Assets of the `improve` group, part 2: the gap report and the annotation tasks it drives."""

from collections import Counter

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, PartitionsDefinition, asset

from ontos_pipeline.assets.common import md_counts, published_sheet
from ontos_pipeline.resources.lakehouse import LocalLakehouseResource, UseCasesResource
from ontos_pipeline.resources.mlflow import LocalMlflowResource
from ontos_pipeline.resources.spark import SparkResource
from ontos_pipeline.stages import gaps as gaps_stage
from ontos_pipeline.stages import tasks as tasks_stage
from ontos_pipeline.steps import step


def _md(rows: list[list], columns: list[str]) -> MetadataValue:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|")[:120] for c in r) + " |" for r in rows]
    return MetadataValue.md("\n".join(lines) if rows else "(none)")


def build_gap_assets(partitions: PartitionsDefinition) -> list:
    @asset(name="gap_report", group_name="improve", partitions_def=partitions,
           deps=["model_evaluation", "monitoring_report"], kinds={"spark", "delta"},
           description="Gaps of the model, each with evidence numbers, a severity and a suggested action: worst "
                       "evaluation slices, answers with low training support, low-confidence regions of unlabelled or "
                       "disputed items, drifted inputs of the latest monitoring report, items and answers with "
                       "repeated negative feedback. Replaces the use case's rows of gap_reports.")
    @step("gap_report")
    def gap_report(context: AssetExecutionContext, spark: SparkResource, lakehouse: LocalLakehouseResource,
                   use_cases: UseCasesResource, mlflow_store: LocalMlflowResource) -> MaterializeResult:
        spec, session, lh, store = (use_cases.get(context.partition_key), spark.session(), lakehouse.get(),
                                    mlflow_store.get())
        sheet = published_sheet(session, lh, spec)
        evaluation = gaps_stage.latest_evaluation(session, lh, store, spec.name)
        version, model = gaps_stage.scoring_model(store, spec.name, evaluation)
        inputs = gaps_stage.GapInputs(evaluation, gaps_stage.latest_drift_report(lh, spec.name), version,
                                      gaps_stage.scored_candidates(session, lh, spec, sheet.table, model))
        found = gaps_stage.find_gaps(session, lh, spec, inputs, sheet.table)
        report = gaps_stage.report_id(spec.name, context.run_id)
        gaps_stage.record_gaps(lh, spec.name, found, report)
        by_kind = Counter(g.kind for g in found)
        return MaterializeResult(metadata={
            "report_id": report, "gaps": len(found),
            "gaps_by_kind": md_counts({k: by_kind.get(k, 0) for k in gaps_stage.KINDS}),
            "top_gaps": MetadataValue.md(gaps_stage.markdown(found)),
            "scored_with": f"model version {version} (the champion, else the evaluated version)" if version
            else "no model",
            "evaluation": f"{evaluation.evaluation_id} (version {evaluation.model_version}, {evaluation.role})"
            if evaluation else "none",
            "monitoring_report": inputs.monitoring.report_id if inputs.monitoring else "none",
            "items_scored": 0 if inputs.scored is None or version is None else len(inputs.scored),
            "not_assessed": MetadataValue.json(inputs.notes)})

    @asset(name="annotation_tasks", group_name="improve", partitions_def=partitions, deps=[gap_report],
           kinds={"delta"},
           description="One annotation task per actionable gap, listing the unlabelled or disputed items in the gap's "
                       "region with the lowest model confidence first; a gap with an open task gets no second one. "
                       "People work them with `ontos tasks list|show|start|complete`.")
    @step("annotation_tasks")
    def annotation_tasks(context: AssetExecutionContext, spark: SparkResource, lakehouse: LocalLakehouseResource,
                         use_cases: UseCasesResource, mlflow_store: LocalMlflowResource) -> MaterializeResult:
        spec, session, lh, store = (use_cases.get(context.partition_key), spark.session(), lakehouse.get(),
                                    mlflow_store.get())
        sheet = published_sheet(session, lh, spec)
        version, model = gaps_stage.scoring_model(store, spec.name,
                                                  gaps_stage.latest_evaluation(session, lh, store, spec.name))
        scored = gaps_stage.scored_candidates(session, lh, spec, sheet.table, model)
        stored = gaps_stage.stored_gaps(lh, spec.name)
        plan = tasks_stage.record_tasks(lh, spec, stored, scored)
        kinds = {g["gap_id"]: g["kind"] for g in stored}
        open_tasks = [t for t in tasks_stage.list_tasks(lh, spec.name) if t["status"] in tasks_stage.OPEN]
        return MaterializeResult(metadata={
            "tasks_created": len(plan.tasks), "open_tasks": len(open_tasks), "gaps": len(stored),
            "items_chosen_by": f"lowest confidence of model version {version}" if version
            else "no model: candidate order (stable hash), not uncertainty",
            "new_tasks": _md([[t["task_id"], t["priority"], kinds.get(t["gap_id"], "?"), len(t["item_refs"]),
                               ", ".join(t["item_refs"][:5])] for t in plan.tasks],
                             ["task", "priority", "gap kind", "items", "first items"]),
            "skipped_gaps": MetadataValue.json({f"{kinds.get(g, '?')} {g}": why for g, why in plan.skipped.items()}),
            "next": "uv run ontos tasks list " + spec.name})

    return [gap_report, annotation_tasks]
