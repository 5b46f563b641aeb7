"""An AI Gateway inference table (`<prefix>_payload`) read as our `inference_log`, so monitoring runs unchanged.

The payload table has one row per request, like `inference_log`; the mapping, column by column:
- request_id: `databricks_request_id` (the id the endpoint returns), else the caller's `client_request_id`
- request_time, status_code: as logged; latency_ms: `execution_duration_ms`
- endpoint_name: the endpoint the table belongs to; model_version: `served_entity_id` through `versions` (null
  when unknown)
- inputs: the request's records as a JSON list, parsed by the serving code's own parser
  (`platform.invocations.records_of`, in a pandas UDF) from any accepted shape (`dataframe_records`, `dataframe_split`,
  `inputs`); a body that does not parse is kept as sent, as the local endpoint logs it
- response: the `predictions` list of a 200 answer, null otherwise
- error: for non-200 answers, the server's `message` (else its raw answer, the logging error codes or the HTTP
  status); null for 200
- rendered_prompt: null (the prompt is rendered inside the served model and not logged by Databricks)
- client_request_id: as logged; caller: `requester` (the identity Databricks authenticated), null when the table
  has no such column

Rows are a sample when the endpoint logs with `sampling_fraction` < 1: counts are not re-weighted. Bodies too large
to log are null (`logging_error_codes`), so such requests count as requests but give no records.
Everything is a Spark column expression: the table is never collected to the driver.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ontos_pipeline.platform.ddl import load_ddl
from ontos_pipeline.platform.invocations import BadRequest, parse_json, records_of
from ontos_pipeline.platform.tables import INFERENCE_LOG

USED_COLUMNS = (
    "databricks_request_id",
    "client_request_id",
    "request_time",
    "status_code",
    "execution_duration_ms",
    "request",
    "response",
    "served_entity_id",
    "logging_error_codes",
)


def request_records(body: str | None) -> str | None:
    """A request body -> its records as JSON text (what the local endpoint logs as `inputs`); the body itself when
    it is not a request in an accepted shape, None for None."""
    if body is None:
        return None
    try:
        records = records_of(parse_json(body.encode()), sys.maxsize)
    except BadRequest:
        return body
    return json.dumps(records, ensure_ascii=False, default=str)


def _inputs_of(bodies: pd.Series) -> pd.Series:
    return bodies.map(request_records, na_action="ignore")


def payload_as_inference_log(
    payload: DataFrame, endpoint_name: str, versions: Mapping[str, str] | None = None
) -> DataFrame:
    """The payload table of `endpoint_name` as `inference_log` rows (same columns, order and types)."""
    missing = [c for c in USED_COLUMNS if c not in payload.columns]
    if missing:
        raise ValueError(f"not an inference (payload) table: missing column(s) {', '.join(missing)}")
    status = F.col("status_code").cast("int")
    ok = status == 200
    response = F.col("response")
    codes = F.array_join(F.col("logging_error_codes"), ", ")
    error = F.coalesce(
        F.get_json_object(response, "$.message"),
        response,
        F.when(codes != "", F.concat(F.lit("not logged: "), codes)),
        F.concat(F.lit("HTTP "), status.cast("string")),
    )
    values: dict[str, Column] = {
        "request_id": F.coalesce(F.col("databricks_request_id"), F.col("client_request_id")),
        "request_time": F.col("request_time"),
        "endpoint_name": F.lit(endpoint_name),
        "model_version": _version_of(F.col("served_entity_id"), versions or {}),
        "inputs": F.pandas_udf(_inputs_of, T.StringType())(F.col("request")),  # a UDF needs a session first
        "rendered_prompt": F.lit(None),
        "response": F.when(ok, F.get_json_object(response, "$.predictions")),
        "latency_ms": F.col("execution_duration_ms"),
        "status_code": status,
        "error": F.when(~ok, error),
        "caller": F.col("requester") if "requester" in payload.columns else F.lit(None),
        "client_request_id": F.col("client_request_id"),
        "guardrails": F.lit(None),  # AI Gateway does not log its guardrail decisions in the payload table
    }
    schema = load_ddl(INFERENCE_LOG).spark_schema()
    return payload.select(*[values[f.name].cast(f.dataType).alias(f.name) for f in schema.fields])


def _version_of(entity: Column, versions: Mapping[str, str]) -> Column:
    if not versions:
        return F.lit(None)
    pairs = [x for k, v in versions.items() for x in (F.lit(str(k)), F.lit(None if v is None else str(v)))]
    return F.create_map(*pairs)[entity]
