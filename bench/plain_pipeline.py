"""The plain alternative to `full_pipeline` for one use case: the script a user would write with pandas, Jinja2 and
scikit-learn, run by bench/overhead.py side by side with ours on the same source tables.

    python bench/plain_pipeline.py SPEC.yaml ONTOS_HOME OUT_DIR

The same steps on the same data, in one process and in memory: read the source tables (Delta, read file by file
with pyarrow), join them as the spec says and check the columns (types, nullability, ranges, allowed values, unique
item_ref, a PII scan of text columns), hash the content, read and validate the imported labels against the
response schema (jsonschema), render every prompt with the sandboxed Jinja2 template, split by a stable hash, write
the chat JSONL per split, fit TF-IDF of the prompt + logistic regression (the baseline too) and score the test
split with the gate's metric. Nothing is versioned, registered, checked twice or recorded. Prints one JSON line.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from pathlib import Path

started = time.perf_counter()

import jsonschema  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import yaml  # noqa: E402
from deltalake import DeltaTable  # noqa: E402
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402
from sklearn.dummy import DummyClassifier  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402

PII = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+|\b\d{3}-\d{2}-\d{4}\b")


def read_table(home: Path, name: str) -> pd.DataFrame:
    catalog, schema, table = ["ontos", *name.split(".")] if name.count(".") == 1 else name.split(".")
    dt = DeltaTable(str(home / "tables" / catalog / schema / table))
    return pa.concat_tables([pq.ParquetFile(f).read() for f in dt.file_uris()]).to_pandas()  # see lakehouse.arrow_table


def main(spec_path: str, home_dir: str, out_dir: str) -> None:
    spec, home, out = yaml.safe_load(Path(spec_path).read_text()), Path(home_dir), Path(out_dir)
    if "enum" not in spec["template"]["response_schema"]:
        raise SystemExit("the plain script handles classification use cases (an enum response)")
    sheet_spec = spec["sheet"]
    frames = {name: read_table(home, s["table"]).add_prefix(f"{name}.") for name, s in sheet_spec["sources"].items()}
    df = frames[sheet_spec["primary"]]
    for join in sheet_spec.get("joins", []):
        df = df.merge(frames[join["source"]], how=join.get("how", "left"), left_on=join["left"], right_on=join["right"])
    df = pd.DataFrame({c["name"]: df[c["from"]] for c in sheet_spec["columns"]})
    problems = {}
    for c in sheet_spec["columns"]:
        col = df[c["name"]]
        bad = col.isna() if c.get("nullable", True) is False else pd.Series(False, index=df.index)
        if "range" in c:
            low, high = c["range"]
            bad |= col.notna() & ~pd.to_numeric(col, errors="coerce").between(low, high)
        if "values" in c:
            bad |= col.notna() & ~col.isin(c["values"])
        if c.get("category") == "text":
            problems[f"{c['name']}:pii"] = int(col.fillna("").str.contains(PII).sum())
        problems[c["name"]] = int(bad.sum())
    problems["duplicate item_ref"] = int(df["item_ref"].duplicated().sum())
    version = hashlib.sha256(pd.util.hash_pandas_object(df, index=False).values.tobytes()).hexdigest()[:20]

    template, schema = spec["template"], spec["template"]["response_schema"]
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    labels = (
        read_table(home, spec["labels"]["import_table"])
        .sort_values("labeled_at")
        .drop_duplicates("item_ref", keep="last")
    )
    labels = labels[[validator.is_valid(json.loads(v)) for v in labels["label_data"]]]
    rows = df.merge(labels[["item_ref", "label_data"]], on="item_ref", how="inner")
    env = ImmutableSandboxedEnvironment()
    prompt = env.from_string(template["prompt"])
    records = rows.drop(columns=["label_data"]).to_dict("records")
    rows["prompt"] = [prompt.render(**r) for r in records]
    rows["response"] = [json.loads(v) for v in rows["label_data"]]
    bucket = rows["item_ref"].map(lambda r: int(hashlib.sha256(r.encode()).hexdigest(), 16) % 100)
    rows["split"] = pd.cut(bucket, [-1, 79, 89, 99], labels=["train", "val", "test"]).astype(str)
    out.mkdir(parents=True, exist_ok=True)
    for split, part in rows.groupby("split"):
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for p, r in zip(part["prompt"], part["response"], strict=True):
                messages = [
                    {"role": "system", "content": template.get("system_prompt", "")},
                    {"role": "user", "content": p},
                    {"role": "assistant", "content": json.dumps(r)},
                ]
                handle.write(json.dumps({"messages": messages}) + "\n")

    train, test = rows[rows["split"] == "train"], rows[rows["split"] == "test"]
    y_train, y_test = train["response"].astype(str), test["response"].astype(str)
    tfidf = TfidfVectorizer()
    x_train, x_test = tfidf.fit_transform(train["prompt"]), tfidf.transform(test["prompt"])
    baseline = DummyClassifier().fit(x_train, y_train).predict(x_test)
    model = LogisticRegression(max_iter=1000).fit(x_train, y_train).predict(x_test)
    print(
        json.dumps(
            {
                "rows": len(df),
                "labelled": len(rows),
                "version": version,
                "problems": problems,
                "train_rows": len(train),
                "test_rows": len(test),
                "baseline_macro_f1": f1_score(y_test, baseline, average="macro"),
                "macro_f1": f1_score(y_test, model, average="macro"),
                "seconds": time.perf_counter() - started,
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
