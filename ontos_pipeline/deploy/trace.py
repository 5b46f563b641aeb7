"""Trace a served answer back to what it was learned from (`ontos trace <request_id>`, the endpoint's metadata).

One request of the inference log is followed through the lineage the pipeline records:

    inference_log row -> model version that answered -> its MLflow training run (params, tags, reproducibility
    pack) -> training_runs row (training sheet, sheet and template versions, label snapshot, qa_pairs Delta
    version) -> the label rows behind the answer -> feedback given on the request.

"The label rows behind the answer", per record of the request:
- the record names an `item_ref` that has labels in `canonical_labels` (this use case's sheet and label type): that
  item's label history (every version, with source, labeled_by and time);
- otherwise the `k` training items nearest to the record's inputs, each with its label history. Training items are
  the usable rows of the train split of the model's training sheet version, read at the Delta version of
  `qa_pairs` the model was trained on, joined to the sheet snapshot it was trained on. Nearest by the model's own
  feature space when the model exposes one (the local trainer's `ItemFeatures.dense`: standardised numeric columns
  with missing flags, one-hot categoricals, image pixels and the SVD projection of the rendered prompt; euclidean
  distance, computed on the executors with `mapInPandas`); otherwise by `column_distance` over the sheet's
  feature columns (see there).

A label row the model learned from is marked `trained_on` (its label_id is the training sheet's canonical_label_id
for the item). Spark reads only what it filters first (one request id, a few item refs); the lineage reads for the
endpoint's metadata (`endpoint_trace`) use the MLflow client and the small `training_runs` table only, no Spark.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ontos_pipeline.platform import tables
from ontos_pipeline.platform.console import format_table
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.platform.model_store import ModelStore
from ontos_pipeline.specs import ITEM_KEY, UseCaseSpec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

DEFAULT_K = 5
MAX_RECORDS = 20  # records of one request that are traced (a request may carry up to max_rows_per_request)
PACK_ARTIFACT = "reproducibility/pack.json"  # train.tracking.PACK
MODEL_SPACE = "model feature space (euclidean distance over the trained model's ItemFeatures.dense)"
COLUMN_SPACE = (
    "sheet columns (column_distance: numeric |difference| / training std, categorical mismatch 1, text token "
    "Jaccard distance; missing counts 1)"
)
LABEL_COLUMNS = (
    "label_id",
    ITEM_KEY,
    "version",
    "label_data",
    "confidence",
    "source",
    "source_ref",
    "labeled_by",
    "created_at",
)


class UnknownRequest(ValueError):
    """The request id is not in the inference log (the message names it)."""


@dataclass(frozen=True)
class ModelLineage:
    """The model version that answered and the data versions it was trained on."""

    use_case: str
    model_name: str
    model_version: str
    run_id: str | None
    family: str | None = None
    training_sheet_id: str | None = None
    training_sheet_version: str | None = None
    qa_table_version: int | None = None  # Delta version of qa_pairs holding that training sheet version
    sheet_version: str | None = None
    sheet_table: str | None = None
    template_version: str | None = None
    label_snapshot_version: int | None = None  # Delta version of canonical_labels
    train_rows: int | None = None  # labelled training rows the model learned from
    val_rows: int | None = None
    dagster_run_id: str | None = None
    git_sha: str | None = None
    trained_at: datetime | None = None
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    pack: dict[str, Any] | None = None  # the reproducibility pack, without the spec and template texts
    problems: tuple[str, ...] = ()  # what could not be read (the rest of the lineage still stands)

    @property
    def pack_uri(self) -> str | None:
        return f"runs:/{self.run_id}/{PACK_ARTIFACT}" if self.run_id else None


@dataclass(frozen=True)
class Neighbour:
    item_ref: str
    distance: float
    labels: list[dict]
    training: dict | None  # the item's training-sheet row (split, status, response, canonical_label_id)


@dataclass(frozen=True)
class RecordTrace:
    index: int
    item_ref: str | None  # the one the record names, if any
    match: str  # "item" (the item's own labels) | "nearest" (the k nearest training items) | "none"
    labels: list[dict] = field(default_factory=list)  # match "item"
    training: dict | None = None  # match "item": the item's training-sheet row, when it is in the training sheet
    neighbours: list[Neighbour] = field(default_factory=list)  # match "nearest"
    space: str | None = None  # match "nearest": how distances were measured
    note: str | None = None


@dataclass(frozen=True)
class Trace:
    request: dict
    use_case: str | None
    model: ModelLineage | None
    records: list[RecordTrace]
    feedback: list[dict]
    k: int
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        out = asdict(self)
        if self.model is not None:
            out["model"]["pack_uri"] = self.model.pack_uri
        return _jsonable(out)


# -- lineage (no Spark) -------------------------------------------------------------------------------------------
def model_lineage(lakehouse: Lakehouse, store: ModelStore, use_case: str, version: str) -> ModelLineage:
    """The lineage of a registered model version: its MLflow run (params, tags, pack) and its training_runs row.

    Whatever cannot be read (a model logged outside the training step, a store that moved) is listed in `problems`;
    the `training_runs` row wins over the run's params where both hold a value."""
    from mlflow.exceptions import MlflowException

    name, problems = store.model_name(use_case), []
    client = store.client()
    run_id = None
    try:
        run_id = client.get_model_version(name, str(version)).run_id or None
    except MlflowException as exc:
        problems.append(f"model {name} version {version} is not in the registry: {_first_line(exc)}")
    rows = lakehouse.records(tables.TRAINING_RUNS, {"use_case": use_case, "model_version": str(version)})
    if run_id:
        rows = [r for r in rows if r["mlflow_run_id"] == run_id] or rows
    row = max(rows, key=lambda r: r["created_at"]) if rows else {}
    run_id = run_id or row.get("mlflow_run_id")
    params: dict[str, str] = {}
    tags: dict[str, str] = {}
    pack = None
    if run_id:
        try:
            run = client.get_run(run_id)
            params = dict(run.data.params)
            tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
        except MlflowException as exc:
            problems.append(f"MLflow run {run_id} cannot be read: {_first_line(exc)}")
        pack = _pack(store, run_id, problems)
    if not row:
        problems.append(f"no training_runs row for {use_case} model version {version} (not trained by trained_model)")
    data = (pack or {}).get("data", {})

    def pick(key: str, *fallbacks: object) -> Any:
        return next((v for v in (row.get(key), *fallbacks) if v not in (None, "", "None")), None)

    metrics = json.loads(row["metrics"]) if row.get("metrics") else {}
    return ModelLineage(
        use_case=use_case,
        model_name=name,
        model_version=str(version),
        run_id=run_id,
        family=pick("family", metrics.get("family"), params.get("winner")),
        training_sheet_id=pick("training_sheet_id", data.get("training_sheet_id")),
        training_sheet_version=pick(
            "training_sheet_version", params.get("training_sheet_version"), data.get("training_sheet_version")
        ),
        qa_table_version=_int(pick("qa_table_version", data.get("qa_pairs_table_version"))),
        sheet_version=pick("sheet_version", params.get("sheet_version"), data.get("sheet_version")),
        sheet_table=pick("sheet_table", data.get("sheet_table")),
        template_version=pick(
            "template_version", params.get("template_version"), (pack or {}).get("template", {}).get("version")
        ),
        label_snapshot_version=_int(
            pick("label_snapshot_version", params.get("label_snapshot_version"), data.get("label_snapshot_version"))
        ),
        train_rows=_int(params.get("train_rows")),
        val_rows=_int(params.get("val_rows")),
        dagster_run_id=pick("dagster_run_id", tags.get("dagster_run_id")),
        git_sha=pick("git_sha", (pack or {}).get("git_sha")),
        trained_at=row.get("created_at"),
        params=params,
        tags=tags,
        pack=pack,
        problems=tuple(problems),
    )


def _pack(store: ModelStore, run_id: str, problems: list[str]) -> dict | None:
    """The run's reproducibility pack without the spec and template texts (they are in the artifact)."""
    import tempfile
    from pathlib import Path

    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = store.client().download_artifacts(run_id, PACK_ARTIFACT, tmp)
            pack = json.loads(Path(path).read_text(encoding="utf-8"))
    except Exception as exc:  # a missing artifact or store: reported, the rest of the trace stands
        problems.append(f"no reproducibility pack in run {run_id}: {_first_line(exc)}")
        return None
    pack.pop("spec", None)
    pack.pop("environment", None)
    template = pack.get("template") or {}
    pack["template"] = {k: template.get(k) for k in ("name", "version")}
    return pack


def endpoint_trace(lakehouse: Lakehouse, store: ModelStore, use_case: str, version: str | None) -> dict[str, object]:
    """Metadata for the serving endpoint asset: the trace of the served model version (model version, training
    run, training sheet / sheet / template versions, label counts). Never raises: a trace that cannot be read
    says why in `trace`."""
    if not version:
        return {"trace": "no model is served"}
    try:
        lineage = model_lineage(lakehouse, store, use_case, version)
    except Exception as exc:  # metadata only; the deploy decision is already made
        return {"trace": f"unavailable: {type(exc).__name__}: {_first_line(exc)}"}

    def text(value: object) -> str:
        return "unknown" if value is None else str(value)

    out: dict[str, object] = {
        "trace": f"{lineage.model_name} version {lineage.model_version} <- MLflow run {text(lineage.run_id)}",
        "trace_model_version": lineage.model_version,
        "trace_mlflow_run_id": text(lineage.run_id),
        "trace_training_sheet": f"{text(lineage.training_sheet_id)} version {text(lineage.training_sheet_version)}",
        "trace_training_sheet_version": text(lineage.training_sheet_version),
        "trace_sheet_version": text(lineage.sheet_version),
        "trace_template_version": text(lineage.template_version),
        "trace_label_snapshot_version": text(lineage.label_snapshot_version),
        "trace_training_labels": lineage.train_rows if lineage.train_rows is not None else "unknown",
        "trace_validation_labels": lineage.val_rows if lineage.val_rows is not None else "unknown",
        "trace_command": "uv run ontos trace <X-Request-Id of an answer>",
    }
    if lineage.pack_uri:
        out["trace_reproducibility_pack"] = lineage.pack_uri
    if lineage.problems:
        out["trace_problems"] = "; ".join(lineage.problems)
    return out


# -- the request ----------------------------------------------------------------------------------------------------
def logged_request(spark: SparkSession, lakehouse: Lakehouse, request_id: str) -> dict:
    """The inference log row of `request_id` (UnknownRequest naming it when there is none)."""
    from pyspark.sql import functions as F

    rid = request_id.strip()
    log = lakehouse.read(spark, tables.INFERENCE_LOG)
    found = (
        log.filter((F.col("request_id") == rid) | (F.col("client_request_id") == rid))
        .select(*[_utc_micros(c) if c == "request_time" else c for c in log.columns])
        .limit(50)
        .collect()
    )
    rows = [_from_micros(r.asDict(), "request_time") for r in found]
    mine = [r for r in rows if r["request_id"] == rid]
    if mine:
        return mine[0]
    where = lakehouse.name(tables.INFERENCE_LOG)
    if rows:
        ids = ", ".join(sorted(r["request_id"] for r in rows)[:5])
        raise UnknownRequest(
            f"unknown request id {rid!r}: it is the client's X-Request-Id of {len(rows)} logged request(s), not a "
            f"server id; trace the server's X-Request-Id of the answer instead ({ids})"
        )
    raise UnknownRequest(
        f"unknown request id {rid!r}: it is not in {where} (the X-Request-Id header of an `ontos serve` answer; "
        "a running server commits its log every --flush-seconds)"
    )


def request_records(inputs: str | None, max_rows: int = 10_000) -> list[dict]:
    """The records a logged request carried: the JSON list the server logs for parsed requests, or any of the
    request shapes for a refused body that still parses; [] otherwise."""
    from ontos_pipeline.platform.invocations import BadRequest, records_of

    if not inputs:
        return []
    try:
        payload = json.loads(inputs)
    except (json.JSONDecodeError, TypeError):
        return []
    if isinstance(payload, list) and all(isinstance(r, dict) for r in payload):
        return payload
    try:
        return records_of(payload, max_rows)
    except (BadRequest, ValueError, TypeError):
        return []


def trace_request(
    spark: SparkSession,
    lakehouse: Lakehouse,
    store: ModelStore,
    specs: Mapping[str, UseCaseSpec],
    request_id: str,
    k: int = DEFAULT_K,
    max_records: int = MAX_RECORDS,
) -> Trace:
    """Everything that led to one served answer (see the module docstring)."""
    if k < 1:
        raise ValueError("--k must be at least 1")
    row = logged_request(spark, lakehouse, request_id)
    request = _request_view(row)
    feedback = sorted(
        lakehouse.records(tables.FEEDBACK, {"request_id": row["request_id"]}),
        key=lambda r: (r["seq"], r["feedback_id"]),
    )
    for f in feedback:
        f["correction"] = _loads(f.get("correction"))
    spec = next((s for s in specs.values() if s.serving.endpoint_name == row["endpoint_name"]), None)
    notes: list[str] = []
    if spec is None:
        notes.append(f"no use case serves endpoint {row['endpoint_name']!r} now; labels cannot be looked up")
        return Trace(request, None, None, [], feedback, k, notes)
    version = row.get("model_version")
    lineage = model_lineage(lakehouse, store, spec.name, version) if version else None
    if lineage is None:
        notes.append("no model version answered (the endpoint had no champion)")
    records = request_records(row.get("inputs"), spec.serving.max_rows_per_request)
    if len(records) > max_records:
        notes.append(f"the request holds {len(records)} records; the first {max_records} are traced")
        records = records[:max_records]
    if not records:
        notes.append("the logged inputs hold no records to trace")
    traced = trace_records(spark, lakehouse, store, spec, lineage, records, k) if records else []
    return Trace(request, spec.name, lineage, traced, feedback, k, notes)


def trace_records(
    spark: SparkSession,
    lakehouse: Lakehouse,
    store: ModelStore,
    spec: UseCaseSpec,
    lineage: ModelLineage | None,
    records: Sequence[dict],
    k: int,
) -> list[RecordTrace]:
    """Per record: the labels of the item it names, or of the k nearest training items."""
    refs = [r.get(ITEM_KEY) if isinstance(r.get(ITEM_KEY), str) else None for r in records]
    own = label_rows(spark, lakehouse, spec, {r for r in refs if r})
    unmatched = [i for i, ref in enumerate(refs) if not (ref and own.get(ref))]
    nearest: dict[int, list[tuple[str, float]]] = {}
    space, why = None, None
    if unmatched:
        if lineage is None or lineage.qa_table_version is None or not lineage.training_sheet_version:
            why = "the model's training data is not recorded (no training_runs row or pack): no nearest items"
        else:
            nearest, space = nearest_training_items(
                spark, lakehouse, store, spec, lineage, [records[i] for i in unmatched], k
            )
            nearest = {unmatched[j]: found for j, found in nearest.items()}
    neighbour_refs = {ref for found in nearest.values() for ref, _ in found}
    labels = {**own, **label_rows(spark, lakehouse, spec, neighbour_refs - set(own))}
    training = training_rows(spark, lakehouse, lineage, {r for r in refs if r} | neighbour_refs)
    for rows in labels.values():
        for label in rows:
            entry = training.get(label[ITEM_KEY])
            label["trained_on"] = bool(entry and entry.get("canonical_label_id") == label["label_id"])
    out = []
    for i, ref in enumerate(refs):
        if ref and own.get(ref):
            out.append(RecordTrace(i, ref, "item", labels=labels[ref], training=training.get(ref)))
        elif i in nearest:
            note = f"item_ref {ref!r} has no labels in canonical_labels" if ref else None
            neighbours = [Neighbour(n, d, labels.get(n, []), training.get(n)) for n, d in nearest[i]]
            out.append(RecordTrace(i, ref, "nearest", neighbours=neighbours, space=space, note=note))
        else:
            out.append(RecordTrace(i, ref, "none", note=why or "no training items to compare with"))
    return out


def label_rows(spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec, refs: set[str]) -> dict[str, list[dict]]:
    """item_ref -> its label history in canonical_labels (this sheet and label type), oldest version first."""
    from pyspark.sql import functions as F

    if not refs:
        return {}
    found = (
        lakehouse.read(spark, tables.CANONICAL_LABELS)
        .filter(
            (F.col("sheet_id") == spec.name)
            & (F.col("label_type") == spec.labels.label_type)
            & F.col(ITEM_KEY).isin(sorted(refs))
        )
        .select(*[_utc_micros(c) if c == "created_at" else c for c in LABEL_COLUMNS])
        .collect()
    )
    out: dict[str, list[dict]] = {}
    for r in sorted((_from_micros(r.asDict(), "created_at") for r in found), key=lambda r: (r[ITEM_KEY], r["version"])):
        r["label_data"] = _loads(r["label_data"])
        out.setdefault(r[ITEM_KEY], []).append(r)
    return out


def training_rows(
    spark: SparkSession, lakehouse: Lakehouse, lineage: ModelLineage | None, refs: set[str]
) -> dict[str, dict]:
    """item_ref -> its row in the model's training sheet version (as of the qa_pairs version it was trained on)."""
    from pyspark.sql import functions as F

    if not refs or lineage is None or lineage.qa_table_version is None or not lineage.training_sheet_version:
        return {}
    qa = _training_sheet(spark, lakehouse, lineage).filter(F.col(ITEM_KEY).isin(sorted(refs)))
    found = qa.select(
        ITEM_KEY, "split", "status", F.col("response").cast("string").alias("response"), "canonical_label_id"
    ).collect()
    out = {}
    for r in found:
        r = r.asDict()
        r["response"] = _loads(r["response"])
        out[r[ITEM_KEY]] = r
    return out


def _training_sheet(spark: SparkSession, lakehouse: Lakehouse, lineage: ModelLineage) -> DataFrame:
    from pyspark.sql import functions as F

    qa = lakehouse.read(spark, tables.QA_PAIRS, version=lineage.qa_table_version).filter(
        F.col("version") == lineage.training_sheet_version
    )
    return qa.filter(F.col("training_sheet_id") == lineage.training_sheet_id) if lineage.training_sheet_id else qa


def training_items(spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec, lineage: ModelLineage) -> DataFrame:
    """The model's training items with their sheet columns: usable rows of the train split of its training sheet
    version (at the qa_pairs Delta version it was trained on), joined to the sheet snapshot it was trained on."""
    from pyspark.sql import functions as F

    from ontos_pipeline.train.training_data import SPLIT, model_rows

    sheet_table = lineage.sheet_table or _sheet_table(lakehouse, spec.name, lineage.sheet_version)
    rows = model_rows(spark, lakehouse, spec, _training_sheet(spark, lakehouse, lineage), sheet_table, "training")
    return rows.filter(F.col(SPLIT) == "train")


def _sheet_table(lakehouse: Lakehouse, sheet_id: str, version: str | None) -> str:
    rows = lakehouse.records(tables.SHEETS, {"sheet_id": sheet_id, "version": version}, columns=["snapshot_table"])
    if not rows:
        raise ValueError(f"sheet {sheet_id} version {version} is not in the sheet registry")
    return rows[0]["snapshot_table"]


def nearest_training_items(
    spark: SparkSession,
    lakehouse: Lakehouse,
    store: ModelStore,
    spec: UseCaseSpec,
    lineage: ModelLineage,
    records: Sequence[dict],
    k: int,
) -> tuple[dict[int, list[tuple[str, float]]], str]:
    """For each record (by position): the k nearest training items as (item_ref, distance), nearest first, and
    the space the distances were measured in (the model's own features when it has them, else the sheet columns)."""
    rows = training_items(spark, lakehouse, spec, lineage)
    model = _feature_model(store, spec.name, lineage.model_version)
    if model is not None:
        queries = _query_frame(lakehouse, spec, model, records)
        if queries is not None:
            return _model_nearest(rows, model, queries, k), MODEL_SPACE
    return {i: column_distance_nearest(rows, spec, r, k) for i, r in enumerate(records)}, COLUMN_SPACE


def _feature_model(store: ModelStore, use_case: str, version: str):
    """The trained `ResponseModel` when it exposes a feature space (the local trainer's), else None."""
    try:
        model = store.load(store.version_uri(use_case, version))
    except Exception:  # not loadable here: the sheet-column distance is used instead
        return None
    features = getattr(getattr(model, "predictor", None), "features", None)
    return model if features is not None and hasattr(features, "dense") else None


def _query_frame(lakehouse: Lakehouse, spec: UseCaseSpec, model, records: Sequence[dict]):
    """The records as the model reads them (typed like the server types them, image files resolved), or None when
    a record lacks a column the model needs."""
    import pandas as pd

    from ontos_pipeline.platform.images import with_image_files
    from ontos_pipeline.platform.invocations import BadRequest, validate_records

    needed = model.input_columns
    if any(c not in r for r in records for c in needed):
        return None
    columns = {c.name: c for c in spec.sheet.columns}
    typed = []
    for r in records:
        try:
            typed.extend(validate_records([r], needed, columns, lakehouse.volume_path()))
        except BadRequest:
            typed.append(dict(r))  # logged as sent (e.g. a redacted cell): the features read it as missing
    frame = pd.DataFrame(typed)[needed]
    return with_image_files(frame, list(model.columns.images), lakehouse.volume_path())


def _model_nearest(rows: DataFrame, model, queries, k: int) -> dict[int, list[tuple[str, float]]]:
    """k nearest rows per query in the model's dense feature space: each Spark task embeds its rows and keeps its
    own k best per query, then one window keeps the global k best."""
    import numpy as np
    import pandas as pd
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from ontos_pipeline.platform.images import image_file_column
    from ontos_pipeline.train.trainer.models import with_prompt

    features, template, columns = model.predictor.features, model.template, model.columns
    q = np.asarray(features.dense(with_prompt(template, columns, queries.reset_index(drop=True))), dtype=np.float64)
    files = [image_file_column(c) for c in columns.images if image_file_column(c) in rows.columns]
    wanted = [ITEM_KEY, *[c for c in model.input_columns if c != ITEM_KEY], *files]

    def nearest(batches):
        for batch in batches:
            if batch.empty:
                continue
            batch = batch.reset_index(drop=True)
            x = np.asarray(features.dense(with_prompt(template, columns, batch)), dtype=np.float64)
            d = np.sqrt(np.maximum(((x[:, None, :] - q[None, :, :]) ** 2).sum(axis=2), 0.0))
            for j in range(q.shape[0]):
                top = np.argsort(d[:, j], kind="stable")[:k]
                yield pd.DataFrame({"query": j, ITEM_KEY: batch[ITEM_KEY].iloc[top].to_numpy(), "distance": d[top, j]})

    found = rows.select(*wanted).mapInPandas(nearest, f"query int, {ITEM_KEY} string, distance double")
    rank = F.row_number().over(Window.partitionBy("query").orderBy("distance", ITEM_KEY))
    best = found.withColumn("rank", rank).filter(F.col("rank") <= k).collect()
    out: dict[int, list[tuple[str, float]]] = {j: [] for j in range(q.shape[0])}
    for r in sorted(best, key=lambda r: (r["query"], r["rank"])):
        out[r["query"]].append((r[ITEM_KEY], float(r["distance"])))
    return out


def column_distance_nearest(rows: DataFrame, spec: UseCaseSpec, record: Mapping, k: int) -> list[tuple[str, float]]:
    """The k training rows nearest to `record` by `column_distance`, in Spark: [(item_ref, distance)]."""
    distance = column_distance(rows, spec, record)
    if distance is None:
        return []
    best = rows.select(ITEM_KEY, distance.alias("distance")).orderBy("distance", ITEM_KEY).limit(k).collect()
    return [(r[ITEM_KEY], float(r["distance"])) for r in best if r["distance"] is not None]


def column_distance(rows: DataFrame, spec: UseCaseSpec, record: Mapping):
    """A simple distance from `record` to each row over the sheet's feature columns the record carries, as a Spark
    Column (None when it carries none): sqrt of the sum of one term per column, each in [0, 1] or so -

    - numeric: |row - record| / (std of the column over the rows), squared; 1 when either value is missing;
    - categorical: 0 when equal, 1 otherwise (missing on one side only counts as different);
    - text: Jaccard distance of the lower-cased word sets (1 - |common| / |union|; two empty texts are equal)."""
    from pyspark.sql import functions as F

    numeric = [
        c.name
        for c in spec.sheet.columns
        if c.category == "numeric" and c.type in ("integer", "double") and c.name in record and c.name in rows.columns
    ]
    categorical = [c.name for c in spec.sheet.columns_of("categorical") if c.name in record and c.name in rows.columns]
    text = [c.name for c in spec.sheet.columns_of("text") if c.name in record and c.name in rows.columns]
    if not (numeric or categorical or text):
        return None
    spread = rows.agg(*[F.stddev(F.col(c).cast("double")).alias(c) for c in numeric]).first() if numeric else {}
    terms = []
    for c in numeric:
        value = _number(record.get(c))
        scale = float(spread[c] or 0.0) or 1.0
        if value is None:
            terms.append(F.lit(1.0))
        else:
            diff = F.abs(F.col(c).cast("double") - F.lit(value)) / F.lit(scale)
            terms.append(F.coalesce(diff * diff, F.lit(1.0)))
    for c in categorical:
        value = record.get(c)
        same = F.col(c).cast("string").eqNullSafe(F.lit(None if value is None else str(value)).cast("string"))
        terms.append(F.when(same, F.lit(0.0)).otherwise(F.lit(1.0)))
    for c in text:
        words = sorted({w for w in _words(record.get(c))})
        mine = F.array_distinct(
            F.filter(F.split(F.lower(F.coalesce(F.col(c), F.lit(""))), r"[^\w]+"), lambda w: w != "")
        )
        theirs = F.array(*[F.lit(w) for w in words]) if words else F.array().cast("array<string>")
        union = F.size(F.array_union(mine, theirs))
        common = F.size(F.array_intersect(mine, theirs))
        terms.append(F.when(union == 0, F.lit(0.0)).otherwise(F.lit(1.0) - common / union))
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return F.sqrt(total)


# -- the report -----------------------------------------------------------------------------------------------------
def format_trace(trace: Trace) -> str:
    """The readable report `ontos trace` prints."""
    r = trace.request
    when = r["request_time"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if r.get("request_time") else "?"
    latency = f", {r['latency_ms']:.1f} ms" if r.get("latency_ms") is not None else ""
    lines = [
        f"request {r['request_id']}",
        f"  endpoint {r['endpoint_name']} (use case {trace.use_case or 'unknown'}), {when} UTC, caller "
        f"{r.get('caller') or '-'}, status {r['status_code']}{latency}"
        + (f", client id {r['client_request_id']}" if r.get("client_request_id") else ""),
        f"  answer: {_short(r.get('response')) if r.get('status_code') == 200 else r.get('error') or '-'}",
    ]
    m = trace.model
    if m is None:
        lines.append(f"model: none (version {r.get('model_version') or '-'})")
    else:
        lines += [
            f"model {m.model_name} version {m.model_version}" + (f" (family {m.family})" if m.family else ""),
            f"  MLflow training run: {m.run_id or 'unknown'}"
            + (f" (dagster run {m.dagster_run_id})" if m.dagster_run_id else "")
            + (f", trained {m.trained_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if m.trained_at else ""),
            f"  training sheet {m.training_sheet_id or '?'} version {m.training_sheet_version or '?'}"
            + (f" (qa_pairs Delta version {m.qa_table_version})" if m.qa_table_version is not None else ""),
            f"  sheet version {m.sheet_version or '?'}" + (f" ({m.sheet_table})" if m.sheet_table else ""),
            f"  template version {m.template_version or '?'}",
            f"  labels: canonical_labels Delta version {_dash(m.label_snapshot_version)}, trained on "
            f"{_dash(m.train_rows)} rows, validated on {_dash(m.val_rows)}",
        ]
        if m.pack_uri and m.pack:
            lines.append(f"  reproducibility pack: {m.pack_uri}")
            if m.pack.get("command"):
                lines.append(f"    rebuild: {m.pack['command']}")
        lines += [f"  ! {p}" for p in m.problems]
    for rec in trace.records:
        head = f"record {rec.index}" + (f" (item_ref {rec.item_ref})" if rec.item_ref else " (no item_ref)")
        if rec.match == "item":
            where = (
                f"; in the training sheet: split {rec.training['split']}, status {rec.training['status']}"
                if rec.training
                else "; not in the model's training sheet version"
            )
            lines += [f"{head}: labels of the item{where}", _indent(_label_table(rec.labels))]
        elif rec.match == "nearest":
            lines.append(f"{head}: the {len(rec.neighbours)} nearest training items, by {rec.space}")
            if rec.note:
                lines.append(f"  ({rec.note})")
            rows = []
            for rank, n in enumerate(rec.neighbours, 1):
                current = n.labels[-1] if n.labels else {}
                rows.append(
                    [
                        rank,
                        n.item_ref,
                        f"{n.distance:.4f}",
                        _short(current.get("label_data"), 40),
                        current.get("source"),
                        current.get("labeled_by"),
                        _time(current.get("created_at")),
                        len(n.labels),
                    ]
                )
            lines.append(
                _indent(
                    format_table(
                        [
                            "#",
                            "item_ref",
                            "distance",
                            "label (current)",
                            "source",
                            "labeled by",
                            "time (UTC)",
                            "versions",
                        ],
                        rows,
                    )
                    if rows
                    else "(no training items)"
                )
            )
        else:
            lines.append(f"{head}: {rec.note}")
    if trace.feedback:
        lines.append(f"feedback on this request ({len(trace.feedback)}):")
        rows = [
            [
                f["seq"],
                f.get("rating") or "-",
                _short(f.get("correction"), 40) if f.get("correction") is not None else "-",
                (f.get("comment") or "")[:40],
                f.get("author") or "-",
                f["status"] + (f" ({f['reason']})" if f.get("reason") else ""),
                _time(f.get("created_at")),
            ]
            for f in trace.feedback
        ]
        lines.append(
            _indent(format_table(["seq", "rating", "correction", "comment", "author", "status", "time (UTC)"], rows))
        )
    else:
        lines.append("feedback on this request: none")
    lines += [f"note: {n}" for n in trace.notes]
    return "\n".join(lines)


def _label_table(labels: Sequence[dict]) -> str:
    rows = [
        [
            label["version"],
            _short(label["label_data"], 40),
            label["source"],
            label.get("labeled_by") or "-",
            _time(label["created_at"]),
            "-" if label.get("confidence") is None else f"{label['confidence']:.2f}",
            "yes" if label.get("trained_on") else "",
        ]
        for label in labels
    ]
    return format_table(["version", "label", "source", "labeled by", "time (UTC)", "confidence", "trained on"], rows)


# -- small helpers ----------------------------------------------------------------------------------------------
def _request_view(row: Mapping) -> dict:
    keys = (
        "request_id",
        "client_request_id",
        "request_time",
        "endpoint_name",
        "model_version",
        "caller",
        "status_code",
        "latency_ms",
        "error",
        "response",
        "inputs",
        "rendered_prompt",
    )
    view = {k: row.get(k) for k in keys}
    view["response"] = _loads(view["response"])
    view["inputs"] = _loads(view["inputs"])
    return view


def _utc_micros(column: str):
    """A timestamp column as microseconds since the epoch (collected as a number, whatever the local timezone)."""
    from pyspark.sql import functions as F

    return F.unix_micros(F.col(column)).alias(column)


def _from_micros(row: dict, column: str) -> dict:
    value = row.get(column)
    row[column] = None if value is None else datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(value))
    return row


def _loads(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _int(value: object) -> int | None:
    try:
        return None if value in (None, "", "None") else int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _words(value: object) -> list[str]:
    import re

    return [w for w in re.split(r"[^\w]+", str(value or "").lower()) if w]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _short(value: object, width: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."


def _dash(value: object) -> str:
    return "?" if value is None else str(value)


def _time(value: object) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else "-"


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)
