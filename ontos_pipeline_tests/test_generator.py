"""The synthetic data generator honours the use-case specs: tables, types, labels, drift, PHI, determinism."""

from __future__ import annotations

import io
import json
import re
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from jsonschema import Draft202012Validator, FormatChecker
from PIL import Image

from ontos_pipeline.data.quality import PHI_PATTERNS  # the scanner's own (Java and Python agree)
from synthetic_data.acme.invoice_extraction import NEW_PROVIDERS
from synthetic_data.blocks import BLOCK_ROWS, png_bytes
from synthetic_data.generator import GENERATORS, generate_tables

SPEC_DIR = Path(__file__).resolve().parents[1] / "synthetic_data" / "use_cases"
SPECS = {path.stem: yaml.safe_load(path.read_text()) for path in sorted(SPEC_DIR.glob("*.yaml"))}
USE_CASES = sorted(SPECS)
ROWS, DRIFTED_ROWS = 600, 300

ARROW_TYPES = {
    "string": pa.string(),
    "double": pa.float64(),
    "integer": pa.int64(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
LABELS_FIELDS = [
    ("item_ref", pa.string()),
    ("label_data", pa.string()),
    ("confidence", pa.float64()),
    ("labeled_by", pa.string()),
    ("labeled_at", pa.timestamp("us", tz="UTC")),
    ("allowed_uses", pa.list_(pa.string())),
    ("prohibited_uses", pa.list_(pa.string())),
]


# --- helpers -----------------------------------------------------------------------------------------------


def spec_seed(use_case: str) -> int:
    return SPECS[use_case]["synthetic"]["seed"]


def materialize(use_case: str, image_dir: Path, *, seed: int | None = None, **kwargs) -> dict[str, pa.Table]:
    options = {"rows": ROWS, "drifted_rows": DRIFTED_ROWS, "seed": spec_seed(use_case) if seed is None else seed}
    tables = generate_tables(use_case, image_dir=image_dir, **(options | kwargs))
    return {t.name: pa.Table.from_batches(list(t.batches()), schema=t.schema) for t in tables}


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="module")
def generated(image_root):
    """use case -> {table name: pa.Table}, generated once per module with the spec's seed."""
    cache: dict[str, dict[str, pa.Table]] = {}

    def get(use_case: str) -> dict[str, pa.Table]:
        if use_case not in cache:
            cache[use_case] = materialize(use_case, image_root / use_case)
        return cache[use_case]

    return get


def sources(use_case: str) -> dict[str, dict]:
    return SPECS[use_case]["sheet"]["sources"]


def primary_table(use_case: str) -> str:
    return sources(use_case)[SPECS[use_case]["sheet"]["primary"]]["table"]


def labels_table(use_case: str) -> str:
    return SPECS[use_case]["labels"]["import_table"]


def first_labels(labels: pa.Table) -> list:
    """The first (importer's) label of every item, parsed."""
    seen: dict[str, object] = {}
    for ref, data in zip(labels["item_ref"].to_pylist(), labels["label_data"].to_pylist(), strict=True):
        seen.setdefault(ref, json.loads(data))
    return list(seen.values())


def share(values: list, value) -> float:
    return sum(v == value for v in values) / len(values)


def total_variation(a: list, b: list) -> float:
    keys = set(a) | set(b)
    return 0.5 * sum(abs(share(a, k) - share(b, k)) for k in keys)


def joined(tables: dict[str, pa.Table], use_case: str, table: str, column: str) -> list:
    """A dimension column looked up for every row of `table` (the primary or its drifted twin)."""
    join = SPECS[use_case]["sheet"]["joins"][0]
    key = join["left"].split(".")[1]
    dimension = tables[sources(use_case)[join["source"]]["table"]]
    lookup = dict(zip(dimension[key].to_pylist(), dimension[column].to_pylist(), strict=True))
    return [lookup[k] for k in tables[table][key].to_pylist()]


def std_shift(normal: pa.ChunkedArray, drifted: pa.ChunkedArray) -> float:
    a = np.array(normal.drop_null().to_pylist(), dtype=float)
    b = np.array(drifted.drop_null().to_pylist(), dtype=float)
    return abs(b.mean() - a.mean()) / a.std()


def macro_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    scores = []
    for c in np.unique(truth):
        tp = np.sum((predicted == c) & (truth == c))
        precision = tp / max(np.sum(predicted == c), 1)
        recall = tp / np.sum(truth == c)
        scores.append(0 if tp == 0 else 2 * precision * recall / (precision + recall))
    return float(np.mean(scores))


def softmax_regression(x_train, y_train, x_test, steps: int = 600, rate: float = 0.5) -> np.ndarray:
    """A tiny multinomial logistic regression (numpy only) -- the 'model' a learnable label must reward."""
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-9
    a = np.c_[(x_train - mean) / std, np.ones(len(x_train))]
    b = np.c_[(x_test - mean) / std, np.ones(len(x_test))]
    classes = np.unique(y_train)
    onehot = (y_train[:, None] == classes[None, :]).astype(float)
    weights = np.zeros((a.shape[1], classes.shape[0]))
    for _ in range(steps):
        logits = a @ weights
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        weights -= rate * a.T @ (p - onehot) / len(a)
    return classes[np.argmax(b @ weights, axis=1)]


def numeric_features(table: pa.Table) -> np.ndarray:
    columns = []
    for field in table.schema:
        if pa.types.is_floating(field.type) or pa.types.is_integer(field.type):
            x = np.array(table[field.name].to_pylist(), dtype=float)
            x = np.where(np.isnan(x), np.nanmean(x), x)
            columns += [x, np.sign(x) * np.log1p(np.abs(x))]
    return np.column_stack(columns)


# --- the interface -----------------------------------------------------------------------------------------


def test_every_spec_generator_is_known_and_unknown_names_are_refused(tmp_path):
    assert {spec["synthetic"]["generator"] for spec in SPECS.values()} <= set(GENERATORS)
    with pytest.raises(ValueError) as error:
        generate_tables("no_such_case", rows=10, drifted_rows=2, seed=1, image_dir=tmp_path)
    assert "no_such_case" in str(error.value)
    assert all(name in str(error.value) for name in GENERATORS)


@pytest.mark.parametrize("use_case", USE_CASES)
def test_tables_and_columns_are_those_the_spec_declares(use_case, generated):
    tables = generated(use_case)
    primary, labels = primary_table(use_case), labels_table(use_case)
    dimensions = [s["table"] for s in sources(use_case).values() if s["table"] != primary]
    assert list(tables) == [primary, *dimensions, labels, f"{primary}_drifted", f"{labels}_drifted"]

    for source in sources(use_case).values():
        expected = pa.schema([(name, ARROW_TYPES[kind]) for name, kind in source["columns"].items()])
        assert tables[source["table"]].schema == expected
    assert tables[f"{primary}_drifted"].schema == tables[primary].schema
    assert tables[labels].schema == tables[f"{labels}_drifted"].schema == pa.schema(LABELS_FIELDS)
    assert tables[primary].num_rows == ROWS and tables[f"{primary}_drifted"].num_rows == DRIFTED_ROWS


@pytest.mark.parametrize("use_case", USE_CASES)
def test_keys_are_unique_and_foreign_keys_resolve(use_case, generated):
    tables = generated(use_case)
    primary = primary_table(use_case)
    normal, drifted = tables[primary]["item_ref"].to_pylist(), tables[f"{primary}_drifted"]["item_ref"].to_pylist()
    assert None not in normal and len(set(normal)) == len(normal)
    assert None not in drifted and len(set(drifted)) == len(drifted)
    assert not set(normal) & set(drifted)
    for join in SPECS[use_case]["sheet"].get("joins", []):
        left, right = (side.split(".")[1] for side in (join["left"], join["right"]))
        dimension = tables[sources(use_case)[join["source"]]["table"]]
        keys = dimension[right].to_pylist()
        assert len(set(keys)) == len(keys) <= 300
        for table in (primary, f"{primary}_drifted"):
            assert set(tables[table][left].to_pylist()) <= set(keys)


@pytest.mark.parametrize("use_case", USE_CASES)
def test_values_stay_inside_declared_ranges_and_categories(use_case, generated):
    tables = generated(use_case)
    primary = primary_table(use_case)
    for column in SPECS[use_case]["sheet"]["columns"]:
        source, name = column["from"].split(".")
        table = sources(use_case)[source]["table"]
        for t in {table, f"{table}_drifted"} & set(tables):
            values = tables[t][name].to_pylist()
            present = [v for v in values if v is not None]
            if "range" in column:
                low, high = column["range"]
                assert all(low <= v <= high for v in present), (t, name)
            if "values" in column:
                assert set(present) <= set(column["values"]), (t, name)
            if column.get("nullable") is False:
                assert len(present) == len(values), (t, name)
    assert tables[primary].num_rows > 0


@pytest.mark.parametrize("use_case", USE_CASES)
def test_every_label_validates_against_the_response_schema(use_case, generated):
    tables = generated(use_case)
    validator = Draft202012Validator(SPECS[use_case]["template"]["response_schema"], format_checker=FormatChecker())
    primary, labels = primary_table(use_case), labels_table(use_case)
    for suffix in ("", "_drifted"):
        table = tables[labels + suffix]
        for data in table["label_data"].to_pylist():
            errors = list(validator.iter_errors(json.loads(data)))
            assert not errors, (data, errors[0].message)
        confidence = table["confidence"].to_pylist()
        assert all(0 <= c <= 1 for c in confidence)
        assert table["labeled_by"].null_count == table["labeled_at"].null_count == 0
        assert set(table["item_ref"].to_pylist()) == set(tables[primary + suffix]["item_ref"].to_pylist())


# --- realism: imbalance, noise, nulls, conflicts -----------------------------------------------------------


@pytest.mark.parametrize("use_case", USE_CASES)
def test_some_items_have_conflicting_labels_from_another_labeler(use_case, generated):
    labels = generated(use_case)[labels_table(use_case)]
    rows: dict[str, list[tuple[str, str]]] = {}
    for ref, data, by in zip(*(labels[c].to_pylist() for c in ("item_ref", "label_data", "labeled_by")), strict=True):
        rows.setdefault(ref, []).append((data, by))
    conflicts = [r for r in rows.values() if len(r) > 1]
    assert 1 <= len(conflicts) <= 0.02 * len(rows)
    for (first, first_by), (second, second_by) in conflicts:
        assert first != second and first_by != second_by


@pytest.mark.parametrize(
    ("use_case", "column"),
    [
        ("defect_detection", "xray_void_pct"),
        ("predictive_maintenance", "bearing_temp_c"),
        ("anomaly_detection", "slope"),
        ("calibration_insights", "humidity_pct"),
        ("remaining_useful_life", "vibration_trend"),
    ],
)
def test_nullable_numeric_columns_have_a_few_nulls(use_case, column, generated):
    values = generated(use_case)[primary_table(use_case)][column]
    assert 0.003 <= values.null_count / len(values) <= 0.06


@pytest.mark.parametrize(
    ("use_case", "majority", "low", "high"),
    [
        ("defect_detection", "none", 0.5, 0.7),
        ("predictive_maintenance", "no_failure", 0.8, 0.93),
        ("anomaly_detection", "none", 0.55, 0.75),
    ],
)
def test_classes_are_imbalanced(use_case, majority, low, high, generated):
    labels = first_labels(generated(use_case)[labels_table(use_case)])
    enum = SPECS[use_case]["template"]["response_schema"]["enum"]
    assert low <= share(labels, majority) <= high
    assert all(share(labels, c) > 0.03 for c in enum)  # every class is present


def test_calibration_labels_come_from_a_small_action_vocabulary(generated):
    labels = first_labels(generated("calibration_insights")[labels_table("calibration_insights")])
    vocabulary = set(labels)
    assert 5 <= len(vocabulary) <= 6
    assert max(vocabulary, key=labels.count) == "No action required."
    assert all(sentence.endswith(".") for sentence in vocabulary)


@pytest.mark.parametrize(
    ("use_case", "dimension_columns"),
    [
        ("predictive_maintenance", []),
        ("anomaly_detection", []),
        ("calibration_insights", ["days_since_service"]),
        ("defect_detection", []),
    ],
)
def test_enum_labels_are_learnable_from_the_inputs(use_case, dimension_columns, tmp_path):
    tables = materialize(use_case, tmp_path, rows=1500, drifted_rows=10)
    primary = tables[primary_table(use_case)]
    x = numeric_features(primary)
    if dimension_columns:
        extra = [joined(tables, use_case, primary_table(use_case), c) for c in dimension_columns]
        x = np.c_[x, np.array(extra, dtype=float).T]
    y = np.array(first_labels(tables[labels_table(use_case)]))
    half = len(y) // 2
    predicted = softmax_regression(x[:half], y[:half], x[half:])
    values, counts = np.unique(y[:half], return_counts=True)
    majority = np.full(len(y) - half, values[np.argmax(counts)])
    assert macro_f1(y[half:], predicted) > macro_f1(y[half:], majority) + 0.2
    assert np.mean(predicted == y[half:]) > np.mean(majority == y[half:])


def test_remaining_useful_life_is_a_noisy_function_of_the_inputs(generated):
    tables = generated("remaining_useful_life")
    x = numeric_features(tables[primary_table("remaining_useful_life")])
    y = np.array(first_labels(tables[labels_table("remaining_useful_life")]), dtype=float)
    half = len(y) // 2
    a = np.c_[x, np.ones(len(x))]
    coef, *_ = np.linalg.lstsq(a[:half], y[:half], rcond=None)
    residual = y[half:] - a[half:] @ coef
    r2 = 1 - residual.var() / y[half:].var()
    assert 0.5 < r2 < 0.99  # learnable, but not exact


# --- drift -------------------------------------------------------------------------------------------------

# use case -> (numeric column of the primary table that shifts, categorical column that changes mix)
DRIFT = {
    "defect_detection": ("solder_temp_c", "line_id"),
    "predictive_maintenance": ("vibration_rms", "site"),
    "anomaly_detection": (None, "sensor_type"),
    "calibration_insights": ("ambient_temp_c", None),
    "document_extraction": (None, "document_type"),
    "remaining_useful_life": ("avg_load_pct", "asset_class"),
    "invoice_extraction": (None, "payer"),
}


@pytest.mark.parametrize("use_case", USE_CASES)
def test_the_drifted_batch_differs_measurably(use_case, generated):
    tables = generated(use_case)
    primary, labels = primary_table(use_case), labels_table(use_case)
    numeric, category = DRIFT[use_case]
    if numeric:
        assert std_shift(tables[primary][numeric], tables[f"{primary}_drifted"][numeric]) > 0.5
    if category:
        if category in tables[primary].column_names:
            normal, drifted = (tables[t][category].to_pylist() for t in (primary, f"{primary}_drifted"))
        else:
            normal, drifted = (joined(tables, use_case, t, category) for t in (primary, f"{primary}_drifted"))
        assert total_variation(normal, drifted) > 0.15

    normal, drifted = (first_labels(tables[t]) for t in (labels, f"{labels}_drifted"))
    if use_case == "remaining_useful_life":  # the known classes, run harder, have less life left
        classes = dict(
            zip(*(tables[f"{primary}_drifted"][c].to_pylist() for c in ("item_ref", "asset_class")), strict=True)
        )
        refs = list(dict.fromkeys(tables[f"{labels}_drifted"]["item_ref"].to_pylist()))
        known = [v for ref, v in zip(refs, drifted, strict=True) if classes[ref] != "gearbox"]
        assert np.mean(known) < np.mean(normal) - 0.5 * np.std(normal)
    elif use_case == "document_extraction":
        assert total_variation([n["status"] for n in normal], [d["status"] for d in drifted]) > 0.15
    elif use_case == "invoice_extraction":
        totals = [n["total_amount"] for n in normal]
        assert np.mean([d["total_amount"] for d in drifted]) > np.mean(totals) + 0.5 * np.std(totals)
        assert total_variation([n["provider"] for n in normal], [d["provider"] for d in drifted]) > 0.3
    else:
        assert total_variation(normal, drifted) > 0.1


def test_anomaly_windows_get_noisier_in_the_drifted_batch(generated):
    tables = generated("anomaly_detection")
    primary = primary_table("anomaly_detection")
    for sensor_type in ("temperature", "vibration"):
        medians = []
        for table in (primary, f"{primary}_drifted"):
            rows = tables[table].filter(pc.equal(tables[table]["sensor_type"], sensor_type))
            medians.append(np.median(rows["std_value"].to_numpy()))
        assert medians[1] > 1.4 * medians[0]


def test_a_new_asset_class_reports_in_the_drifted_batch_only(generated):
    """A drift a retrain can learn from labelled snapshots: an asset class the first model never saw."""
    tables = generated("remaining_useful_life")
    primary = primary_table("remaining_useful_life")
    normal, drifted = (tables[t]["asset_class"].to_pylist() for t in (primary, f"{primary}_drifted"))
    assert "gearbox" not in normal
    assert 0.2 < drifted.count("gearbox") / len(drifted) < 0.7, drifted.count("gearbox") / len(drifted)


def test_the_new_providers_write_amounts_with_a_decimal_comma(generated):
    """A drift a retrain can learn from corrected invoices: a number layout the first model never saw."""
    tables = generated("invoice_extraction")
    primary = primary_table("invoice_extraction")
    labels = {
        r["item_ref"]: json.loads(r["label_data"])
        for r in tables[f"{labels_table('invoice_extraction')}_drifted"].to_pylist()
    }
    new = {name for name, _ in NEW_PROVIDERS}
    seen = {True: 0, False: 0}
    for row in tables[f"{primary}_drifted"].to_pylist():
        label = labels[row["item_ref"]]
        text = f"{label['total_amount']:,.2f}"
        comma = label["provider"] in new
        written = text.translate(str.maketrans(",.", ".,")) if comma else text
        assert f"${written}" in row["invoice_text"], row["item_ref"]
        seen[comma] += 1
    assert min(seen.values()) > 0.2 * sum(seen.values()), seen
    for row in tables[primary].to_pylist()[:200]:  # the normal batch: decimal points only
        assert not re.search(r"\$\d+,\d{2}(?!\d)", row["invoice_text"]), row["item_ref"]


# --- text, PHI and usage constraints -----------------------------------------------------------------------


def phi_kinds(text: str) -> set[str]:
    return {kind for kind, pattern in PHI_PATTERNS.items() if re.search(pattern, text)}


def test_invoices_carry_phi_exactly_when_the_patient_did_not_consent(generated):
    tables = generated("invoice_extraction")
    patients = tables["acme_raw.patients"].to_pylist()
    by_id = {p["patient_id"]: p for p in patients}
    assert 0.45 <= share([p["consent_training"] for p in patients], True) <= 0.75
    assert all(re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", p["patient_name"]) for p in patients)
    assert all(date(1920, 1, 1) < p["date_of_birth"] < date(2010, 1, 1) for p in patients)

    for suffix in ("", "_drifted"):
        invoices = tables[f"acme_raw.medical_invoices{suffix}"].to_pylist()
        labels = tables[f"acme_raw.invoice_extraction_labels{suffix}"].to_pylist()
        consent = {i["item_ref"]: by_id[i["patient_id"]]["consent_training"] for i in invoices}
        with_ssn = 0
        for invoice in invoices:
            patient = by_id[invoice["patient_id"]]
            text = invoice["invoice_text"]
            found = phi_kinds(text)
            if patient["consent_training"]:
                assert not found, text
                assert "Patient: [REDACTED]" in text and patient["patient_name"] not in text
            else:
                assert {"email", "phone", "date_of_birth"} <= found, text
                assert f"{patient['patient_name']}    DOB: {patient['date_of_birth'].isoformat()}" in text
                assert "MRN" in text and "Member ID" in text
                with_ssn += "ssn" in found
        non_consenting = sum(not c for c in consent.values())
        assert 0 < with_ssn < non_consenting
        for label in labels:
            if consent[label["item_ref"]]:
                assert label["allowed_uses"] == ["training", "evaluation", "serving"]
                assert label["prohibited_uses"] == []
            else:
                assert label["allowed_uses"] == ["evaluation", "serving"]
                assert label["prohibited_uses"] == ["training"]


@pytest.mark.parametrize(
    ("use_case", "column"), [("defect_detection", "operator_notes"), ("document_extraction", "document_text")]
)
def test_text_outside_the_invoices_has_no_phi(use_case, column, generated):
    tables = generated(use_case)
    primary = primary_table(use_case)
    for table in (primary, f"{primary}_drifted"):
        texts = [t for t in tables[table][column].to_pylist() if t is not None]
        assert texts
        assert not [t for t in texts if phi_kinds(t)]


@pytest.mark.parametrize("use_case", [u for u in USE_CASES if u != "invoice_extraction"])
def test_labels_of_other_use_cases_may_be_used_for_everything(use_case, generated):
    labels = generated(use_case)[labels_table(use_case)]
    assert set(map(tuple, labels["allowed_uses"].to_pylist())) == {("training", "evaluation", "serving")}
    assert set(map(tuple, labels["prohibited_uses"].to_pylist())) == {()}


def date_spellings(iso: str) -> set[str]:
    d = date.fromisoformat(iso)
    spellings = {d.strftime(f) for f in ("%Y-%m-%d", "%d %B %Y", "%B %d, %Y", "%d %b %Y", "%m/%d/%Y", "%d.%m.%Y")}
    spellings.add(d.strftime("%d-%b-%Y").upper())
    return spellings | {s.replace(" 0", " ").lstrip("0") for s in spellings}


def test_documents_state_the_labelled_fields_in_varied_layouts(generated):
    tables = generated("document_extraction")
    texts = dict(
        zip(
            *(tables["acme_raw.compliance_documents"][c].to_pylist() for c in ("item_ref", "document_text")),
            strict=True,
        )
    )
    labels = tables["acme_raw.document_extraction_labels"].to_pylist()
    first = {}
    for label in labels:
        first.setdefault(label["item_ref"], json.loads(label["label_data"]))
    found = {field: 0 for field in ("cert_id", "standard", "issue_date", "expiry_date")}
    for ref, fields in first.items():
        text = texts[ref]
        found["cert_id"] += fields["cert_id"] in text
        found["standard"] += fields["standard"] in text
        found["issue_date"] += any(s in text for s in date_spellings(fields["issue_date"]))
        found["expiry_date"] += any(s in text for s in date_spellings(fields["expiry_date"]))
    assert all(count >= 0.9 * len(first) for count in found.values()), found
    assert min(found.values()) < len(first)  # label noise: a few labels disagree with their document
    headings = ["CERTIFICATE OF REGISTRATION", "Certification record", "DECLARATION OF CONFORMITY", "audit outcome"]
    assert all(any(h in t for t in texts.values()) for h in headings)
    assert all("\n" in t for t in texts.values())


# --- images ------------------------------------------------------------------------------------------------


def test_png_encoder_round_trips_through_pillow():
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    image = Image.open(io.BytesIO(png_bytes(pixels)))
    assert image.mode == "RGB" and image.size == (7, 5)
    assert np.array_equal(np.asarray(image), pixels)


def test_image_cells_are_relative_to_the_files_root_when_one_is_given(tmp_path):
    """The demo writes its images under the home's files folder and keeps cells relative to it (a copied home
    still finds them); the bytes are the same as with absolute cells."""
    absolute = materialize("defect_detection", tmp_path / "a" / "images", rows=20, drifted_rows=2)
    relative = materialize(
        "defect_detection", tmp_path / "r" / "images" / "dd", rows=20, drifted_rows=2, files_root=tmp_path / "r"
    )
    cells = relative["acme_raw.pcb_inspections"]["image_path"].to_pylist()
    assert all(c.startswith("images/dd/") and not Path(c).is_absolute() for c in cells)
    for cell, path in zip(cells, absolute["acme_raw.pcb_inspections"]["image_path"].to_pylist(), strict=True):
        assert (tmp_path / "r" / cell).read_bytes() == Path(path).read_bytes()


def test_inspection_images_exist_and_show_the_defect(generated, tmp_path_factory):
    tables = generated("defect_detection")
    inspections = tables["acme_raw.pcb_inspections"].to_pylist()
    labels = dict(
        zip(
            *(tables["acme_raw.defect_detection_labels"][c].to_pylist() for c in ("item_ref", "label_data")),
            strict=True,
        )
    )
    bright: dict[str, list[float]] = {}
    dark: dict[str, list[float]] = {}
    for row in inspections:
        path = Path(row["image_path"])
        assert path.is_absolute() and path.name == f"{row['item_ref']}.png"
        assert re.fullmatch(r"[0-9a-f]{2}", path.parent.name)
        pixels = np.asarray(Image.open(path))
        assert pixels.shape == (32, 32, 3)
        label = json.loads(labels[row["item_ref"]])
        bright.setdefault(label, []).append(float(np.mean(pixels.min(axis=2) > 185)))
        dark.setdefault(label, []).append(float(np.mean(pixels.max(axis=2) < 70)))
    assert np.mean(bright["solder_bridge"]) > np.mean(bright["none"]) + 0.03
    assert np.mean(bright["scratch"]) > np.mean(bright["none"]) + 0.01
    assert np.mean(dark["missing_component"]) < np.mean(dark["none"]) - 0.03
    notes = [r["operator_notes"] for r in inspections]
    assert 0.05 < share(notes, None) < 0.3


# --- determinism and chunking ------------------------------------------------------------------------------


@pytest.mark.parametrize("use_case", USE_CASES)
def test_same_seed_same_data_and_another_seed_other_data(use_case, generated, image_root, tmp_path):
    first = generated(use_case)
    again = materialize(use_case, image_root / use_case)
    assert again.keys() == first.keys()
    assert all(again[name].equals(first[name]) for name in first)
    other = materialize(use_case, tmp_path / "other", seed=spec_seed(use_case) + 1)
    for name in (primary_table(use_case), labels_table(use_case)):
        assert not other[name].equals(first[name])


def test_images_are_byte_identical_for_the_same_seed(tmp_path):
    for run in ("a", "b"):
        materialize("defect_detection", tmp_path / run, rows=40, drifted_rows=10)
    materialize("defect_detection", tmp_path / "c", rows=40, drifted_rows=10, seed=99)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 50
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert sum((tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes() for f in files) >= 45


def test_reading_a_table_twice_gives_the_same_batches(tmp_path):
    for table in generate_tables("calibration_insights", rows=50, drifted_rows=5, seed=3, image_dir=tmp_path):
        first, second = list(table.batches()), list(table.batches())
        assert first and len(first) == len(second)
        assert all(a.equals(b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("use_case", ["predictive_maintenance", "invoice_extraction"])
def test_chunk_size_does_not_change_the_data(use_case, tmp_path):
    rows = BLOCK_ROWS + 700 if use_case == "predictive_maintenance" else 700  # crosses a block boundary
    results = {}
    for chunk_rows in (100, 1000, 50_000):
        tables = generate_tables(
            use_case, rows=rows, drifted_rows=150, seed=5, image_dir=tmp_path, chunk_rows=chunk_rows
        )
        results[chunk_rows] = {}
        for table in tables:
            batches = list(table.batches())
            assert all(b.num_rows == chunk_rows for b in batches[:-1])
            assert 0 < batches[-1].num_rows <= chunk_rows
            results[chunk_rows][table.name] = pa.Table.from_batches(batches, schema=table.schema)
    for name, table in results[100].items():
        assert results[1000][name].equals(table) and results[50_000][name].equals(table)
    refs = results[100][primary_table(use_case)]["item_ref"].to_pylist()
    assert refs[0].endswith("0000001") and refs[-1].endswith(f"{rows:07d}") and len(set(refs)) == rows


@pytest.mark.parametrize("use_case", USE_CASES)
def test_the_drifted_batch_is_gold_labelled(use_case, generated):
    """The drifted batch is what the demo's users know (their corrections) and what its held-out items are scored
    against: one label per item, no conflicting second labeller, and no label noise."""
    tables = generated(use_case)
    labels = tables[f"{labels_table(use_case)}_drifted"]
    refs = labels["item_ref"].to_pylist()
    assert len(refs) == len(set(refs)) == DRIFTED_ROWS
    assert {"vendor_b"}.isdisjoint(labels["labeled_by"].to_pylist())
    assert "vendor_b" in tables[labels_table(use_case)]["labeled_by"].to_pylist()  # the normal batch has conflicts
    if use_case == "document_extraction":  # noise would alter one field so that it is no longer in the text
        texts = dict(
            zip(
                *(
                    tables["acme_raw.compliance_documents_drifted"][c].to_pylist()
                    for c in ("item_ref", "document_text")
                ),
                strict=True,
            )
        )
        for label in labels.to_pylist():
            fields, text = json.loads(label["label_data"]), texts[label["item_ref"]]
            assert fields["cert_id"] in text and fields["standard"] in text, label["item_ref"]
            assert any(s in text for s in date_spellings(fields["issue_date"])), label["item_ref"]
