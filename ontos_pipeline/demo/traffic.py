"""Traffic simulator: real HTTP requests to a serving endpoint, and feedback from the known answers.

Items come from the held-out test split (`normal`) or from the synthetic drifted batch (`drifted`), each with its
ground truth. Feedback: thumbs up when the answer equals the truth, thumbs down otherwise, and for a share of the
wrong answers a correction carrying the truth. A small share of requests is deliberately malformed (a missing
column), as real clients send, so the error path is exercised too.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pandas as pd
import requests
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from ontos_pipeline.data.sheet import assemble_sheet, current_sheet, read_sources
from ontos_pipeline.generate.training_sheet import QA
from ontos_pipeline.platform.images import IMAGE_FILE, with_image_files
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.specs import ITEM_KEY, UseCaseSpec
from ontos_pipeline.train.trainer.local import RESPONSE
from ontos_pipeline.train.training_data import SPLIT, model_rows

BATCHES = ("normal", "drifted")
FEEDBACK_BATCH = 100
TRUTH = "_truth"


@dataclass
class TrafficResult:
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    versions: Counter = field(default_factory=Counter)
    correct: int = 0
    answered: int = 0
    abstained: int = 0  # answers withheld by the endpoint's confidence floor (queued for review, no feedback)
    feedback: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    request_ids: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.answered if self.answered else None


def items(spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec, batch: str, n: int) -> pd.DataFrame:
    """Up to `n` distinct items of the batch with their sheet columns, the ground truth (column `_truth`, parsed
    JSON) and the image files resolved here (`with_image_files`, for scoring in this process). Items never repeat:
    repeats would make the drift tests see a lumpy distribution that is not there."""
    if batch not in BATCHES:
        raise ValueError(f"unknown batch {batch!r}; use one of {', '.join(BATCHES)}")
    if batch == "normal":
        snapshot = current_sheet(lakehouse, spec.name)
        if snapshot is None:
            raise ValueError(f"{spec.name} has no sheet yet; run the pipeline first (`uv run ontos demo`)")
        qa = lakehouse.read(spark, QA).filter(F.col("training_sheet_id") == spec.training_sheet_id)
        rows = model_rows(spark, lakehouse, spec, qa, snapshot.table, "serving").filter(F.col(SPLIT) == "test")
        rows = rows.drop(SPLIT).withColumnRenamed(RESPONSE, TRUTH)
    else:
        sources = read_sources(spark, lakehouse, spec)
        primary, labels = spec.primary_table, spec.labels.import_table
        if labels is None or not lakehouse.exists(f"{primary}_drifted"):
            raise ValueError(
                f"{spec.name} has no drifted batch ({lakehouse.name(primary + '_drifted')}); it comes "
                "with the synthetic demo data"
            )
        sources = {**sources, spec.sheet.primary: lakehouse.read(spark, f"{primary}_drifted")}
        truth = lakehouse.read(spark, f"{labels}_drifted").select(ITEM_KEY, F.col("label_data").alias(TRUTH))
        rows = assemble_sheet(spec, sources).join(truth.dropDuplicates([ITEM_KEY]), ITEM_KEY)
    frame = rows.orderBy(F.xxhash64(ITEM_KEY)).limit(n).toPandas()  # bounded: n requests' worth
    if frame.empty:
        raise ValueError(f"{spec.name} has no {batch} items to send")
    frame[TRUTH] = [json.loads(v) for v in frame[TRUTH]]
    images = [c.name for c in spec.sheet.columns_of("image")]
    return with_image_files(frame, images, lakehouse.volume_path())  # for scoring here; never sent


def land_batch(spark: SparkSession, lakehouse: Lakehouse, spec: UseCaseSpec, batch: str = "drifted") -> int:
    """New production data arrives: the batch's rows are upserted (by item_ref) into the primary source table, so
    the next sheet holds them (unlabelled until labels or feedback come). Idempotent; returns the rows landed."""
    table = f"{spec.primary_table}_{batch}"
    if not lakehouse.exists(table):
        raise ValueError(f"{spec.name} has no {batch} batch ({lakehouse.name(table)})")
    rows = lakehouse.read(spark, table)
    lakehouse.upsert(spark, spec.primary_table, rows, keys=[ITEM_KEY])
    return rows.count()


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return None if value != value else value  # NaN -> null
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return str(value)


def send(
    url: str,
    spec: UseCaseSpec,
    frame: pd.DataFrame,
    feedback_rate: float,
    correction_share: float = 0.5,
    error_share: float = 0.02,
    concurrency: int = 4,
    seed: int = 0,
    token: str | None = None,
) -> TrafficResult:
    """One request per item to `url` (the serving process root), then feedback for a share of the answers; `token`
    is the bearer token sent with every call."""
    rng = random.Random(seed)
    endpoint = f"{url}/serving-endpoints/{spec.serving.endpoint_name}/invocations"
    records = [
        {k: _jsonable(v) for k, v in r.items() if k != TRUTH and not k.startswith(IMAGE_FILE)}
        for r in frame.to_dict("records")
    ]
    plans = [
        (rec, truth, rng.random() < error_share, rng.random() < feedback_rate, rng.random() < correction_share)
        for rec, truth in zip(records, frame[TRUTH], strict=True)
    ]
    result = TrafficResult()
    session = requests.Session()
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    lock = threading.Lock()
    started = time.perf_counter()

    def one(plan) -> None:
        record, truth, broken, give_feedback, correct_it = plan
        if broken:
            record = {k: v for k, v in record.items() if k == ITEM_KEY}
        r = session.post(endpoint, json={"dataframe_records": [record]}, timeout=60)
        answer = r.json()["predictions"][0] if r.status_code == 200 else {}
        abstained = bool(answer.get("abstain"))  # a guardrail withheld it: nothing to judge
        right = r.status_code == 200 and not abstained and _same(answer.get("response"), truth)
        with lock:
            result.requests += 1
            result.statuses[r.status_code] += 1
            result.request_ids.append(r.headers.get("x-request-id", ""))
            if r.status_code == 200:
                result.versions[r.headers.get("x-model-version")] += 1
                result.abstained += abstained
                result.answered += not abstained
                result.correct += right
        if r.status_code != 200 or abstained or not give_feedback:
            return
        body = {
            "request_id": r.headers["x-request-id"],
            "rating": "up" if right else "down",
            "author": "simulate-traffic",
        }
        if not right and correct_it:
            body["correction"] = truth
        with lock:
            feedback.append(body)

    feedback: list[dict] = []
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, plans))
    for start in range(0, len(feedback), FEEDBACK_BATCH):  # as a client app would send them: in batches
        chunk = feedback[start : start + FEEDBACK_BATCH]
        f = session.post(f"{url}/feedback", json=chunk, timeout=120)
        stored = f.json().get("feedback", []) if f.status_code == 201 else []
        for body, row in zip(chunk, stored, strict=False):
            kind = "correction" if "correction" in body else body["rating"]
            result.feedback[kind if row["status"] == "new" else f"{kind} rejected"] += 1
        if f.status_code != 201:
            result.feedback[f"refused {f.status_code}"] += len(chunk)
    result.seconds = time.perf_counter() - started
    return result


def _same(answer: object, truth: object) -> bool:
    if isinstance(answer, float | int) and isinstance(truth, float | int):
        return abs(answer - truth) <= max(1e-6, 0.1 * abs(truth))  # numbers: within 10 %
    return json.dumps(answer, sort_keys=True) == json.dumps(truth, sort_keys=True)
