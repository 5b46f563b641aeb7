"""Small use cases of each response kind with a known rule, and items generated from it (no Spark)."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pandas as pd

from ontos_pipeline.generate.template import compile_template
from ontos_pipeline.specs import load_use_case
from ontos_pipeline.train.trainer.local import RESPONSE

SCHEMAS = {
    "enum": {"type": "string", "enum": ["low", "mid", "high"]},
    "number": {"type": "number", "minimum": 0, "maximum": 1000},
    "object": {
        "type": "object",
        "additionalProperties": False,
        "required": ["order_id", "ordered_on", "amount", "state"],
        "properties": {
            "order_id": {"type": "string", "pattern": "^ORD-[0-9]{4}$"},
            "ordered_on": {"type": "string", "format": "date"},
            "amount": {"type": "number", "minimum": 0},
            "state": {"type": "string", "enum": ["open", "closed"]},
        },
    },
    "text": {"type": "string", "minLength": 3},
}
GATES = {"enum": "macro_f1", "number": "r2", "object": "field_exact_match", "text": "token_f1"}
ANSWERS = {
    ("red", False): "Recalibrate the probe.",
    ("red", True): "Replace the red sensor now.",
    ("blue", False): "No action required.",
    ("blue", True): "Schedule a service visit next week.",
}
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def kind_spec(tmp_path, kind: str, search_trials: int = 0):
    import json

    (tmp_path / f"{kind}.yaml").write_text(
        textwrap.dedent(f"""
        name: {kind}_case
        sheet:
          primary: items
          sources:
            items:
              table: shop.items
              columns: {{item_ref: string, x: double, color: string, note: string}}
          columns:
            - {{name: item_ref, from: items.item_ref, type: string, category: metadata, nullable: false}}
            - {{name: x, from: items.x, type: double, category: numeric}}
            - {{name: color, from: items.color, type: string, category: categorical, values: [red, blue]}}
            - {{name: note, from: items.note, type: string, category: text}}
        labels: {{label_type: {kind}_label}}
        template:
          name: {kind}_template
          system_prompt: Answer as asked.
          prompt: "Reading {{{{ x }}}} on the {{{{ color }}}} unit. {{{{ note }}}}"
          response_schema: {json.dumps(SCHEMAS[kind])}
        training:
          gate: {{metric: {GATES[kind]}, minimum: 0.5}}
          search: {{trials: {search_trials}}}
    """),
        encoding="utf-8",
    )
    spec = load_use_case(tmp_path / f"{kind}.yaml")
    return spec, compile_template(spec)


def items(kind: str, n: int, seed: int, noise: float = 0.05) -> pd.DataFrame:
    """n items with a known answer (a share `noise` of the labels redrawn at random)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, n).round(3)
    color = rng.choice(["red", "blue"], n)
    notes, responses = [], []
    for i in range(n):
        if kind == "object":
            day = int(rng.integers(1, 28))
            month = int(rng.integers(1, 13))
            order, amount = f"ORD-{rng.integers(1000, 10000)}", round(float(rng.uniform(5, 5000)), 2)
            state = ["open", "closed"][int(rng.integers(2))]
            written = [f"2024-{month:02d}-{day:02d}", f"{day} {MONTHS[month - 1]} 2024", f"{month:02d}/{day:02d}/2024"][
                i % 3
            ]
            other = f"ORD-{rng.integers(1000, 10000)}"
            notes.append(
                f"Supersedes {other} from 2023-01-0{1 + i % 9}. Order {order} placed {written}; "
                f"shipping ${rng.uniform(1, 4):.2f}; total ${amount:,.2f}. Order is {state}."
            )
            responses.append(
                {"order_id": order, "ordered_on": f"2024-{month:02d}-{day:02d}", "amount": amount, "state": state}
            )
        else:
            notes.append(["Routine reading.", "Checked twice.", "Night shift."][int(rng.integers(3))])
            if kind == "enum":
                responses.append("low" if x[i] < -0.5 else "high" if x[i] > 0.5 else "mid")
            elif kind == "number":
                responses.append(round(float(100 + 40 * x[i] + (60 if color[i] == "red" else 0) + rng.normal(0, 5)), 2))
            else:
                responses.append(ANSWERS[(color[i], bool(x[i] > 0))])
    frame = pd.DataFrame(
        {"item_ref": [f"I{seed}-{i:04d}" for i in range(n)], "x": x, "color": color, "note": notes, RESPONSE: responses}
    )
    if kind in ("enum", "text"):  # label noise: a few answers redrawn from the answer set
        pool = sorted({str(r) for r in responses})
        flip = rng.random(n) < noise
        frame.loc[flip, RESPONSE] = rng.choice(pool, int(flip.sum()))
    return frame


def registered_enum_versions(cases, home):
    """The enum kind trained in `cases` and registered twice in `home`'s MLflow store (v1 baseline, v2 trained),
    champion = v1: (spec, store, [v1, v2]). What the serving tests and bench/faults.py serve."""
    import mlflow

    from ontos_pipeline.platform.model_store import CHAMPION, local_store
    from ontos_pipeline.train.tracking import log_pyfunc, number_types
    from ontos_pipeline.train.trainer.local import LocalTrainer, TrainingData

    spec, template = kind_spec(cases, "enum")
    outcome = LocalTrainer(seed=1).train(spec, template, TrainingData(items("enum", 300, 1), items("enum", 80, 2)))
    store = local_store(home).activate()
    example = items("enum", 5, 3).drop(columns=[RESPONSE])
    versions = []
    for model in (outcome.baseline.model, outcome.best.model):
        with mlflow.start_run(experiment_id=store.experiment_id(spec.name)):
            info = log_pyfunc(store, model, example, store.model_name(spec.name), number_types(spec))
            versions.append(str(info.registered_model_version))
    store.set_alias(spec.name, CHAMPION, versions[0])
    return spec, store, versions


def labelled_kind(spark, root, kind: str, frame: pd.DataFrame, labelled: pd.DataFrame | None = None, extra: str = ""):
    """A use case of `kind` in `root` (`extra`: YAML appended to its spec) whose source table holds the items of
    `frame` and whose label inbox holds the responses of `labelled` (default: every item of `frame`).
    Returns (settings, defs, lakehouse, spec); the retrain job then trains and serves champion v1."""
    from ontos_pipeline.definitions import build_definitions
    from ontos_pipeline.label.label_files import inbox_dir
    from ontos_pipeline_tests.conftest import make_settings

    cases, home = root / "use_cases", root / "home"
    cases.mkdir()
    kind_spec(cases, kind)
    if extra:
        spec_file = cases / f"{kind}.yaml"
        spec_file.write_text(spec_file.read_text() + extra, encoding="utf-8")
    settings = make_settings(home, cases)
    defs = build_definitions(settings)
    lakehouse = defs.resources["lakehouse"].get()
    spec = defs.resources["use_cases"].get(f"{kind}_case")
    lakehouse.write("shop.items", spark.createDataFrame(frame.drop(columns=[RESPONSE])))
    labelled = frame if labelled is None else labelled
    (inbox_dir(lakehouse, spec.name) / "labels.jsonl").write_text(
        "".join(
            json.dumps({"item_ref": r, "label": v}) + "\n"
            for r, v in zip(labelled["item_ref"], labelled[RESPONSE], strict=True)
        )
    )
    return settings, defs, lakehouse, spec
