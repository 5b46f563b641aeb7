"""Assets of the `deploy` group: the serving endpoint follows the promotion gate."""

import json

from dagster import AssetExecutionContext, DataVersion, MaterializeResult, PartitionsDefinition, asset

from ontos_pipeline.resources.lakehouse import LocalLakehouseResource, UseCasesResource
from ontos_pipeline.resources.serving import LocalServingResource
from ontos_pipeline.resources.spark import SparkResource
from ontos_pipeline.stages.deploy import CHALLENGER
from ontos_pipeline.stages.evaluation import GateResult, stored_evaluation
from ontos_pipeline.steps import step


def build_deploy_assets(partitions: PartitionsDefinition) -> list:
    @asset(name="serving_endpoint", group_name="deploy", partitions_def=partitions, deps=["model_evaluation"],
           kinds={"mlflow"},
           description="The endpoint serves the champion: a challenger that passed the promotion gate becomes "
                       "champion; otherwise the champion stays and the metadata says why. Every decision is an "
                       "event in serving_endpoints.")
    @step("serving_endpoint")
    def serving_endpoint(context: AssetExecutionContext, spark: SparkResource, lakehouse: LocalLakehouseResource,
                         use_cases: UseCasesResource, serving: LocalServingResource) -> MaterializeResult:
        spec = use_cases.get(context.partition_key)
        challenger = serving.mlflow_store.get().version(spec.name, CHALLENGER)
        stored = challenger and stored_evaluation(lakehouse.get(), spec.name, challenger.version)
        gate = GateResult.from_rules(bool(stored["gate_passed"]), json.loads(stored["gate_details"])) if stored \
            else None
        event = serving.deploy(spec, None if gate is None else gate.passed, gate.summary() if gate else "",
                               f"dagster run {context.run_id}")
        if event.event == "keep":
            context.log.warning(f"{spec.serving.endpoint_name}: {event.reason}")
        return MaterializeResult(data_version=DataVersion(f"{event.endpoint_name}@{event.served_version}"), metadata={
            "endpoint": event.endpoint_name, "event": event.event,
            "served_version": event.served_version or "none", "previous_version": event.previous_version or "none",
            "reason": event.reason, "actor": event.actor, "deployed_at": event.created_at.isoformat(),
            "url": serving.url(spec),
            "try_it": f"uv run ontos serve  # then: curl -s {serving.url(spec)} -H 'Content-Type: application/json' "
                      "-d '{\"dataframe_records\": [{...item columns...}]}'"})

    return [serving_endpoint]
