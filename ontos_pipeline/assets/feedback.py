"""The `feedback` observed source: what people and client apps write about served answers."""

from dagster import DataVersion, DataVersionsByPartition, PartitionsDefinition, observable_source_asset

from ontos_pipeline.stages.feedback import FEEDBACK
from ontos_pipeline.stages.improve import CursorEntry, arrivals, feedback_data_version


def build_feedback_assets(partitions: PartitionsDefinition) -> list:
    @observable_source_asset(name=FEEDBACK, group_name="improve", partitions_def=partitions,
                             required_resource_keys={"lakehouse", "use_cases"},
                             description="Thumbs up/down, corrections and comments on served answers (POST /feedback, "
                                         "`ontos feedback`). Its data version per use case is the feedback "
                                         "high-water mark (seq); the retrain sensor reports it on every change.")
    def feedback(context) -> DataVersionsByPartition:
        lakehouse, specs = context.resources.lakehouse.get(), context.resources.use_cases.all()
        if not lakehouse.readable_by_orchestrator:
            raise RuntimeError("observing feedback reads the feedback table in the Dagster process, which works on "
                               "the local target only; on Databricks the feedback table is read by the steps")
        return DataVersionsByPartition({
            name: DataVersion(feedback_data_version(arrivals(lakehouse, spec, CursorEntry()).last_seq))
            for name, spec in specs.items()})

    return [feedback]
