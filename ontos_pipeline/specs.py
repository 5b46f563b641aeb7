"""Use-case YAML files -> typed, validated specs.

A use case is data, not code: one YAML file declares the sheet (sources, joins, typed columns), the labels, the
prompt template with its response schema, and the training/serving/monitoring settings. Every error names the
file, the field path and what is expected.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ontos_pipeline.platform.files import TextFileError, read_text_file
from ontos_pipeline.platform.identifiers import validate_identifier
from ontos_pipeline.spec_fields import (
    CATEGORIES,
    COLUMN_TYPES,
    ITEM_KEY,
    JOIN_KINDS,
    METRICS_BY_KIND,
    allowed_keys,
)
from ontos_pipeline.spec_fields import RESPONSE_KINDS as RESPONSE_KINDS  # re-exported: the vocabulary of a spec
from ontos_pipeline.spec_fields import USES as USES

_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}$")


class SpecError(ValueError):
    """A use-case file is invalid. `str()` reads `file: field.path: problem`."""

    def __init__(self, path: Path | str, field_path: str, message: str):
        self.path, self.field_path, self.problem = str(path), field_path, message
        super().__init__(f"{path}: {field_path}: {message}" if field_path else f"{path}: {message}")


@dataclass(frozen=True)
class SourceSpec:
    name: str
    table: str
    columns: Mapping[str, str]


@dataclass(frozen=True)
class ColumnRef:
    source: str
    column: str

    def __str__(self) -> str:
        return f"{self.source}.{self.column}"


@dataclass(frozen=True)
class JoinSpec:
    source: str
    left: ColumnRef
    right: ColumnRef
    how: str = "left"


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    ref: ColumnRef
    type: str
    category: str
    nullable: bool = True
    range: tuple[float, float] | None = None
    values: tuple[str, ...] | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class SheetSpec:
    primary: str
    sources: Mapping[str, SourceSpec]
    joins: tuple[JoinSpec, ...]
    columns: tuple[ColumnSpec, ...]
    consent_column: str | None = None

    def column(self, name: str) -> ColumnSpec:
        return next(c for c in self.columns if c.name == name)

    def columns_of(self, category: str) -> tuple[ColumnSpec, ...]:
        return tuple(c for c in self.columns if c.category == category)

    @property
    def phi_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if "phi" in c.tags)

    @property
    def holds_phi(self) -> bool:
        """PHI-tagged columns or a consent column: usage constraints apply (PHI sheets)."""
        return self.consent_column is not None or bool(self.phi_columns)


@dataclass(frozen=True)
class LabelsSpec:
    label_type: str
    import_table: str | None = None
    min_coverage: float = 0.0  # share of sheet items that must carry a usable canonical label
    column: ColumnRef | None = None  # a label column of the primary source (source.column), read as import labels


@dataclass(frozen=True)
class TemplateSpec:
    name: str
    system_prompt: str
    prompt: str
    response_schema: Mapping[str, Any]
    response_kind: str
    variables: Mapping[str, str] = field(default_factory=dict)  # template variable -> sheet column (if renamed)


@dataclass(frozen=True)
class GateSpec:
    metric: str
    minimum: float
    confidence: float = 0.95  # of the paired bootstrap interval of challenger - champion


@dataclass(frozen=True)
class TrainingSpec:
    gate: GateSpec
    split: Mapping[str, float] = field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    search_trials: int = 0  # Optuna trials tuning the best model family (0: no search)
    seed: int = 0
    image_size: int = 8  # images become image_size x image_size RGB pixels for the local trainer


PII_ACTIONS = ("off", "redact", "refuse")  # what a PII guardrail does with e-mail, phone, SSN, date of birth found


@dataclass(frozen=True)
class PiiGuardrailSpec:
    """PII in what the model sees (`inputs`) and in what the caller gets (`outputs`): off | redact | refuse."""

    inputs: str = "off"
    outputs: str = "off"

    @property
    def active(self) -> bool:
        return self.inputs != "off" or self.outputs != "off"


@dataclass(frozen=True)
class RateLimitSpec:
    """A token bucket per caller (serving token name): `burst` requests at once, refilled at requests_per_minute."""

    requests_per_minute: int
    burst: int


@dataclass(frozen=True)
class GuardrailsSpec:
    """Guardrails of the endpoint (the defaults guard nothing: an endpoint without them answers as before)."""

    pii: PiiGuardrailSpec = field(default_factory=PiiGuardrailSpec)
    enforce_response_schema: bool = False  # an answer that does not validate against the response schema: refused
    confidence_floor: float | None = None  # below: an abstain, and the item is queued for human review
    rate_limit: RateLimitSpec | None = None

    @property
    def active(self) -> bool:
        return (
            self.pii.active
            or self.enforce_response_schema
            or self.confidence_floor is not None
            or self.rate_limit is not None
        )


@dataclass(frozen=True)
class AbTestSpec:
    """A/B traffic split: a challenger that passed its gate serves `challenger_percent` of the requests next to the
    champion until the arms' comparison concludes (0: off, a passing challenger is promoted at once)."""

    challenger_percent: int = 0
    min_requests: int = 100  # per arm, before the comparison may conclude
    confidence: float = 0.95  # of the interval of challenger - champion thumbs-up share

    @property
    def active(self) -> bool:
        return self.challenger_percent > 0


@dataclass(frozen=True)
class ServingSpec:
    endpoint_name: str
    max_rows_per_request: int = 1000
    max_body_bytes: int = 5_000_000
    log_phi: str = "redact"  # how PHI-tagged columns reach the inference log: redact | hash | mask
    guardrails: GuardrailsSpec = field(default_factory=GuardrailsSpec)
    ab_test: AbTestSpec = field(default_factory=AbTestSpec)


@dataclass(frozen=True)
class MonitoringSpec:
    """Monitoring window and alert thresholds (drift defaults follow Evidently and Lakehouse Monitoring)."""

    window_minutes: int = 60
    psi_threshold: float = 0.2  # PSI >= 0.2: significant shift
    p_value: float = 0.05  # KS (numeric) / chi-square (categorical) test level
    min_rows: int = 30  # fewer served rows than this: drift is not assessed
    max_error_rate: float = 0.05
    max_latency_p95_ms: float = 1000.0
    min_accuracy: float | None = None
    min_positive_feedback_rate: float | None = None


@dataclass(frozen=True)
class RetrainSpec:
    """When feedback and reviewed labels trigger a retrain, and how feedback becomes canonical labels."""

    min_actionable_feedback: int = 20  # corrections + thumbs-down since the last requested retrain
    min_reviewed_labels: int = 20  # review decisions + inbox label rows since the last requested retrain
    correction_confidence: float = 0.9  # confidence of a canonical label made from a correction
    confirm_thumbs_up: bool = True  # a thumbs-up confirms the served answer as a label (off for PHI sheets)
    confirm_confidence: float = 0.6
    feedback_weight: int = 3  # an item corrected by feedback counts this many times in the train split
    max_confirmation_share: float = 0.25  # thumbs-up confirmations: at most this share of the train rows, weight 1
    on_breach: str = "act"  # a monitoring breach: act (retrain or open tasks) | off
    breach_min_new_labels: int = 20  # labels newer than the champion's training needed to retrain on a breach


NOTIFY_EVENTS = ("run_failure", "gate", "alert", "tasks")  # what `notifications.events` may name (default: all)


@dataclass(frozen=True)
class SlackChannelSpec:
    """A Slack incoming webhook; its URL (a secret) is read from the environment variable named here."""

    webhook_url_env: str = "ONTOS_SLACK_WEBHOOK_URL"


@dataclass(frozen=True)
class EmailChannelSpec:
    """E-mail over SMTP; host, port, user and password come from the environment variables named here."""

    to: tuple[str, ...]
    sender: str  # `from` in the YAML
    smtp_host_env: str = "ONTOS_SMTP_HOST"
    smtp_port_env: str = "ONTOS_SMTP_PORT"
    smtp_user_env: str = "ONTOS_SMTP_USER"
    smtp_password_env: str = "ONTOS_SMTP_PASSWORD"
    tls: str = "starttls"  # starttls | ssl | none


@dataclass(frozen=True)
class WebhookChannelSpec:
    """A generic JSON webhook; its URL (a secret: it may carry a token) is read from the environment."""

    url_env: str = "ONTOS_NOTIFY_WEBHOOK_URL"


@dataclass(frozen=True)
class NotificationsSpec:
    """Who hears about run failures, gate decisions, new alerts and new annotation tasks (no channel: nobody)."""

    events: tuple[str, ...] = NOTIFY_EVENTS
    slack: SlackChannelSpec | None = None
    email: EmailChannelSpec | None = None
    webhook: WebhookChannelSpec | None = None

    @property
    def channels(self) -> list[SlackChannelSpec | EmailChannelSpec | WebhookChannelSpec]:
        return [c for c in (self.slack, self.email, self.webhook) if c is not None]


@dataclass(frozen=True)
class SyntheticSpec:
    generator: str
    rows: int
    drifted_rows: int
    seed: int


@dataclass(frozen=True)
class UseCaseSpec:
    name: str
    title: str
    description: str
    path: Path
    sheet: SheetSpec
    labels: LabelsSpec
    template: TemplateSpec
    training: TrainingSpec
    synthetic: SyntheticSpec | None
    serving: ServingSpec
    monitoring: MonitoringSpec = field(default_factory=MonitoringSpec)
    retrain: RetrainSpec = field(default_factory=RetrainSpec)
    notifications: NotificationsSpec = field(default_factory=NotificationsSpec)

    @property
    def primary_table(self) -> str:
        return self.sheet.sources[self.sheet.primary].table

    @property
    def training_sheet_id(self) -> str:
        """The training sheet of this use case: its sheet rendered with its template."""
        return f"{self.name}__{self.template.name}"


# ----------------------------------------------------------------------------------------------------------------
class _Reader:
    """Typed field access with error messages that carry the file and the field path."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, message: str) -> SpecError:
        return SpecError(self.path, where, message)

    def mapping(self, value: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, f"expected a mapping, got {_kind(value)}")
        return value

    def get(
        self,
        obj: Mapping[str, Any],
        key: str,
        where: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
        expected: str | None = None,
    ) -> Any:
        path = f"{where}.{key}" if where else key
        if key not in obj:
            if default is ...:
                raise self.fail(path, f"is required ({expected or _type_name(kind)})")
            return default
        value = obj[key]
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            raise self.fail(path, f"expected {expected or _type_name(kind)}, got a boolean")
        if not isinstance(value, kind):
            raise self.fail(path, f"expected {expected or _type_name(kind)}, got {_kind(value)}")
        return value

    def choice(self, obj: Mapping[str, Any], key: str, where: str, choices: tuple[str, ...], default: Any = ...) -> str:
        value = self.get(obj, key, where, str, default, expected=f"one of {', '.join(choices)}")
        if value not in choices:
            raise self.fail(f"{where}.{key}", f"unknown value {value!r}; expected one of {', '.join(choices)}")
        return value

    def identifier(self, value: str, where: str) -> str:
        try:
            return validate_identifier(value, what="name")
        except ValueError as exc:
            raise self.fail(where, str(exc)) from None

    def unknown_keys(self, obj: Mapping[str, Any], where: str) -> None:
        """Refuse keys that `spec_fields.FIELDS` (the one list of fields, also the reference) does not list."""
        allowed = allowed_keys(where)
        extra = sorted(set(obj) - allowed)
        if extra:
            raise self.fail(
                f"{where}.{extra[0]}" if where else extra[0],
                f"unknown field; expected one of {', '.join(sorted(allowed))}",
            )


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a mapping",
        Mapping: "a mapping",
    }
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


# ----------------------------------------------------------------------------------------------------------------
def _find_ref(schema: object, path: str = "") -> str | None:
    """The dotted path of the first `$ref` / `$dynamicRef` in a JSON schema, None when it has none."""
    if isinstance(schema, Mapping):
        for key, value in schema.items():
            if key in ("$ref", "$dynamicRef", "$recursiveRef"):
                return path
            found = _find_ref(value, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            found = _find_ref(value, f"{path}.{i}" if path else str(i))
            if found is not None:
                return found
    return None


class _KeyProblem(ValueError):
    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML keeps the last silently) and keys that are not
    strings (`1: x`, `[a]: x`: no spec field is named so)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: merged keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise _KeyProblem(line, f"the key {key!r} is not a name; keys are field names (text)")
            if key in seen:
                raise _KeyProblem(line, f"the key {key!r} is given twice (also on line {seen[key]}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep)


def load_use_case(path: Path | str) -> UseCaseSpec:
    """Load and validate one use-case file."""
    path = Path(path)
    r = _Reader(path)
    try:
        raw = yaml.load(read_text_file(path), Loader=_StrictLoader)  # a SafeLoader: no arbitrary objects
    except OSError as exc:
        raise SpecError(path, "", f"cannot read the file ({exc.strerror})") from None
    except TextFileError as exc:
        raise SpecError(path, f"line {exc.where.rsplit(':', 1)[1]}", exc.reason) from None
    except _KeyProblem as exc:
        raise SpecError(path, f"line {exc.line}", str(exc)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(path, where, f"invalid YAML: {getattr(exc, 'problem', exc)}") from None
    doc = r.mapping(raw, "")
    r.unknown_keys(doc, "")
    name = r.identifier(r.get(doc, "name", "", str), "name")
    sheet = _sheet(r, r.mapping(r.get(doc, "sheet", "", Mapping), "sheet"))
    labels = _labels(r, r.mapping(r.get(doc, "labels", "", Mapping), "labels"), sheet)
    template = _template(r, r.mapping(r.get(doc, "template", "", Mapping), "template"))
    columns = [c.name for c in sheet.columns]
    for var, column in template.variables.items():
        if column not in columns:
            raise r.fail(
                f"template.variables.{var}", f"unknown sheet column {column!r}; sheet columns: {', '.join(columns)}"
            )
    training = _training(r, r.mapping(r.get(doc, "training", "", Mapping, {}), "training"), template.response_kind)
    synthetic_raw = r.get(doc, "synthetic", "", Mapping, None)
    synthetic = _synthetic(r, synthetic_raw) if synthetic_raw is not None else None
    serving = _serving(r, r.mapping(r.get(doc, "serving", "", Mapping, {}), "serving"), name)
    monitoring = _monitoring(r, r.mapping(r.get(doc, "monitoring", "", Mapping, {}), "monitoring"))
    retrain = _retrain(r, r.mapping(r.get(doc, "retrain", "", Mapping, {}), "retrain"), sheet)
    notifications = _notifications(r, r.mapping(r.get(doc, "notifications", "", Mapping, {}), "notifications"))
    return UseCaseSpec(
        name=name,
        title=r.get(doc, "title", "", str, name.replace("_", " ").capitalize()),
        description=str(r.get(doc, "description", "", str, "")).strip(),
        path=path,
        sheet=sheet,
        labels=labels,
        template=template,
        training=training,
        synthetic=synthetic,
        serving=serving,
        monitoring=monitoring,
        retrain=retrain,
        notifications=notifications,
    )


def load_use_cases(directory: Path | str) -> dict[str, UseCaseSpec]:
    """Load every `*.yaml` in `directory`; names must be unique across files."""
    directory = Path(directory)
    files = sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml"))
    if not files:
        raise SpecError(directory, "", "no use-case files (*.yaml) found; add one per use case")
    specs: dict[str, UseCaseSpec] = {}
    for path in files:
        spec = load_use_case(path)
        if spec.name in specs:
            raise SpecError(
                path,
                "name",
                f"duplicate use-case name {spec.name!r}, already defined in "
                f"{specs[spec.name].path}; names must be unique",
            )
        twin = next((s for s in specs.values() if s.template.name == spec.template.name), None)
        if twin is not None:
            raise SpecError(
                path,
                "template.name",
                f"template name {spec.template.name!r} is already used by {twin.path}; template names must be unique",
            )
        specs[spec.name] = spec
    return dict(sorted(specs.items()))


def _ref(r: _Reader, value: Any, where: str, sources: Mapping[str, SourceSpec]) -> ColumnRef:
    if not isinstance(value, str) or value.count(".") != 1:
        raise r.fail(where, f"expected source.column, got {value!r}")
    source, column = value.split(".")
    if source not in sources:
        raise r.fail(where, f"unknown source {source!r}; declared sources: {', '.join(sources)}")
    if column not in sources[source].columns:
        raise r.fail(
            where, f"unknown column {column!r} in source {source!r}; its columns: {', '.join(sources[source].columns)}"
        )
    return ColumnRef(source, column)


def _sheet(r: _Reader, raw: Mapping[str, Any]) -> SheetSpec:
    r.unknown_keys(raw, "sheet")
    sources: dict[str, SourceSpec] = {}
    for sname, sraw in r.mapping(r.get(raw, "sources", "sheet", Mapping), "sheet.sources").items():
        where = f"sheet.sources.{sname}"
        r.identifier(sname, where)
        sraw = r.mapping(sraw, where)
        r.unknown_keys(sraw, where)
        table = r.get(sraw, "table", where, str, expected="a table name such as acme_raw.orders")
        if not _TABLE_NAME.match(table):
            raise r.fail(
                f"{where}.table",
                f"{table!r} is not a table name: expected table, schema.table or "
                "catalog.schema.table made of letters, digits and underscores",
            )
        columns = {}
        for cname, ctype in r.mapping(r.get(sraw, "columns", where, Mapping), f"{where}.columns").items():
            r.identifier(cname, f"{where}.columns.{cname}")
            if ctype not in COLUMN_TYPES:
                raise r.fail(
                    f"{where}.columns.{cname}", f"unknown type {ctype!r}; expected one of {', '.join(COLUMN_TYPES)}"
                )
            columns[cname] = ctype
        sources[sname] = SourceSpec(sname, table, columns)
    if not sources:
        raise r.fail("sheet.sources", "declare at least one source")

    primary = r.get(raw, "primary", "sheet", str, next(iter(sources)))
    if primary not in sources:
        raise r.fail("sheet.primary", f"unknown source {primary!r}; declared sources: {', '.join(sources)}")

    joins: list[JoinSpec] = []
    joined = {primary}
    for i, jraw in enumerate(r.get(raw, "joins", "sheet", list, [])):
        where = f"sheet.joins[{i}]"
        jraw = r.mapping(jraw, where)
        r.unknown_keys(jraw, where)
        source = r.get(jraw, "source", where, str)
        if source not in sources:
            raise r.fail(f"{where}.source", f"unknown source {source!r}; declared sources: {', '.join(sources)}")
        if source in joined:
            raise r.fail(f"{where}.source", f"source {source!r} is already part of the sheet; join it once")
        left = _ref(r, r.get(jraw, "left", where, str), f"{where}.left", sources)
        right = _ref(r, r.get(jraw, "right", where, str), f"{where}.right", sources)
        if left.source not in joined:
            raise r.fail(
                f"{where}.left", f"{left} must come from a source already in the sheet ({', '.join(sorted(joined))})"
            )
        if right.source != source:
            raise r.fail(f"{where}.right", f"{right} must be a column of the joined source {source!r}")
        ltype, rtype = sources[left.source].columns[left.column], sources[source].columns[right.column]
        if ltype != rtype:
            raise r.fail(where, f"join keys have different types: {left} is {ltype}, {right} is {rtype}")
        joins.append(JoinSpec(source, left, right, r.choice(jraw, "how", where, JOIN_KINDS, "left")))
        joined.add(source)
    unjoined = sorted(set(sources) - joined)
    if unjoined:
        raise r.fail("sheet.joins", f"source {unjoined[0]!r} is declared but never joined; add a join for it")

    columns: list[ColumnSpec] = []
    for i, craw in enumerate(r.get(raw, "columns", "sheet", list)):
        columns.append(_column(r, r.mapping(craw, f"sheet.columns[{i}]"), f"sheet.columns[{i}]", sources))
    names = [c.name for c in columns]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise r.fail(
            f"sheet.columns[{names.index(dupes[0], names.index(dupes[0]) + 1)}].name",
            f"duplicate column name {dupes[0]!r}",
        )
    if ITEM_KEY not in names:
        raise r.fail("sheet.columns", f"a column named {ITEM_KEY!r} (the unique item key) is required")
    key = columns[names.index(ITEM_KEY)]
    if key.type != "string" or key.nullable:
        raise r.fail(
            f"sheet.columns[{names.index(ITEM_KEY)}]", f"{ITEM_KEY!r} must be type: string with nullable: false"
        )
    if key.ref.source != primary:
        raise r.fail(
            f"sheet.columns[{names.index(ITEM_KEY)}].from",
            f"{ITEM_KEY!r} must come from the primary source {primary!r}",
        )

    consent = None
    if "governance" in raw:
        graw = r.mapping(raw["governance"], "sheet.governance")
        r.unknown_keys(graw, "sheet.governance")
        consent = r.get(graw, "consent_column", "sheet.governance", str, None)
        if consent is not None:
            if consent not in names:
                raise r.fail(
                    "sheet.governance.consent_column",
                    f"unknown column {consent!r}; it must be one of the sheet columns",
                )
            if columns[names.index(consent)].type != "boolean":
                raise r.fail("sheet.governance.consent_column", f"column {consent!r} must be of type boolean")
    return SheetSpec(primary, sources, tuple(joins), tuple(columns), consent)


def _column(r: _Reader, raw: Mapping[str, Any], where: str, sources: Mapping[str, SourceSpec]) -> ColumnSpec:
    r.unknown_keys(raw, where)
    name = r.identifier(r.get(raw, "name", where, str), f"{where}.name")
    ref = _ref(r, r.get(raw, "from", where, str, expected="source.column"), f"{where}.from", sources)
    ctype = r.choice(raw, "type", where, COLUMN_TYPES)
    category = r.choice(raw, "category", where, CATEGORIES)
    source_type = sources[ref.source].columns[ref.column]
    castable = source_type == ctype or {source_type, ctype} <= {"integer", "double"} or ctype == "string"
    if not castable:
        raise r.fail(f"{where}.type", f"{ref} is {source_type} in the source and cannot be cast to {ctype}")
    if category == "numeric" and ctype not in ("integer", "double"):
        raise r.fail(f"{where}.category", f"numeric columns must be integer or double, not {ctype}")
    if category in ("text", "image") and ctype != "string":
        raise r.fail(f"{where}.category", f"{category} columns must be of type string (a path for images)")
    rng = None
    if "range" in raw:
        bounds = raw["range"]
        if (
            not isinstance(bounds, list)
            or len(bounds) != 2
            or not all(isinstance(b, int | float) and not isinstance(b, bool) and math.isfinite(b) for b in bounds)
            or bounds[0] > bounds[1]
        ):
            raise r.fail(f"{where}.range", f"expected [min, max] finite numbers with min <= max, got {bounds!r}")
        if ctype not in ("integer", "double"):
            raise r.fail(f"{where}.range", f"a range needs an integer or double column, not {ctype}")
        rng = (float(bounds[0]), float(bounds[1]))
    values = None
    if "values" in raw:
        vals = raw["values"]
        if not isinstance(vals, list) or not vals or not all(isinstance(v, str) for v in vals):
            raise r.fail(f"{where}.values", f"expected a non-empty list of strings, got {vals!r}")
        if ctype != "string":
            raise r.fail(f"{where}.values", f"allowed values need a string column, not {ctype}")
        values = tuple(vals)
    tags = r.get(raw, "tags", where, list, [])
    for j, tag in enumerate(tags):
        if not isinstance(tag, str) or not re.match(r"^[a-z][a-z0-9_]*$", tag):
            raise r.fail(f"{where}.tags[{j}]", f"expected a lower-case tag such as phi or pii, got {tag!r}")
    nullable = r.get(raw, "nullable", where, bool, True)
    return ColumnSpec(name, ref, ctype, category, nullable, rng, values, tuple(tags))


def _labels(r: _Reader, raw: Mapping[str, Any], sheet: SheetSpec) -> LabelsSpec:
    r.unknown_keys(raw, "labels")
    label_type = r.identifier(r.get(raw, "label_type", "labels", str), "labels.label_type")
    table = r.get(raw, "import_table", "labels", str, None)
    if table is not None and not _TABLE_NAME.match(table):
        raise r.fail("labels.import_table", f"{table!r} is not a table name")
    coverage = float(r.get(raw, "min_coverage", "labels", (int, float), 0.0))
    if not 0.0 <= coverage <= 1.0:
        raise r.fail("labels.min_coverage", f"expected a share between 0 and 1, got {coverage:g}")
    column = None
    if "column" in raw:
        column = _ref(r, r.get(raw, "column", "labels", str, expected="source.column"), "labels.column", sheet.sources)
        if column.source != sheet.primary:
            raise r.fail("labels.column", f"{column} must be a column of the primary source {sheet.primary!r}")
        leak = next((c for c in sheet.columns if c.ref == column), None)
        if leak is not None:
            raise r.fail(
                "labels.column",
                f"{column} is also the sheet column {leak.name!r}: the model would see its own label; "
                "remove that column from sheet.columns",
            )
    return LabelsSpec(label_type, table, coverage, column)


def response_kind(schema: Mapping[str, Any]) -> str | None:
    """enum / number / object / text for the response schemas the platform can train and validate."""
    kind = schema.get("type")
    if kind == "string" and "enum" in schema:
        return "enum"
    if kind in ("number", "integer"):
        return "number"
    if kind == "object" and isinstance(schema.get("properties"), Mapping) and schema["properties"]:
        return "object"
    if kind == "string":
        return "text"
    return None


def _template(r: _Reader, raw: Mapping[str, Any]) -> TemplateSpec:
    r.unknown_keys(raw, "template")
    name = r.identifier(r.get(raw, "name", "template", str), "template.name")
    schema = dict(r.mapping(r.get(raw, "response_schema", "template", Mapping), "template.response_schema"))
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        loc = ".".join(str(p) for p in exc.absolute_path)
        raise r.fail(
            f"template.response_schema{'.' + loc if loc else ''}", f"not a valid JSON Schema: {exc.message}"
        ) from None
    ref = _find_ref(schema)
    if ref is not None:
        raise r.fail(
            f"template.response_schema{'.' + ref if ref else ''}",
            "$ref is not supported (every label would fail to resolve it); write the schema out in full",
        )
    kind = response_kind(schema)
    if kind is None:
        raise r.fail(
            "template.response_schema",
            "unsupported response schema: expected a string enum, a number/integer, an object with "
            "properties, or a string (free text)",
        )
    if kind == "enum" and (len(schema["enum"]) < 2 or not all(isinstance(v, str) for v in schema["enum"])):
        raise r.fail("template.response_schema.enum", "an enum response needs at least two string values")
    variables = dict(r.mapping(r.get(raw, "variables", "template", Mapping, {}), "template.variables"))
    for var, column in variables.items():
        r.identifier(var, f"template.variables.{var}")
        if not isinstance(column, str):
            raise r.fail(f"template.variables.{var}", f"expected a sheet column name, got {_kind(column)}")
    return TemplateSpec(
        name,
        r.get(raw, "system_prompt", "template", str, ""),
        r.get(raw, "prompt", "template", str),
        schema,
        kind,
        variables,
    )


def _training(r: _Reader, raw: Mapping[str, Any], kind: str) -> TrainingSpec:
    r.unknown_keys(raw, "training")
    allowed = METRICS_BY_KIND[kind]
    graw = r.mapping(r.get(raw, "gate", "training", Mapping, {"metric": allowed[0], "minimum": 0.0}), "training.gate")
    if "tolerance" in graw:
        raise r.fail(
            "training.gate.tolerance",
            "the gate no longer takes a fixed tolerance: a challenger is kept out when the bootstrap interval of "
            "its difference to the champion lies below zero (set training.gate.confidence, default 0.95); "
            "remove tolerance",
        )
    r.unknown_keys(graw, "training.gate")
    gate = GateSpec(
        r.choice(graw, "metric", "training.gate", allowed, allowed[0]),
        float(r.get(graw, "minimum", "training.gate", (int, float), 0.0)),
        float(r.get(graw, "confidence", "training.gate", (int, float), 0.95)),
    )
    if not 0.5 <= gate.confidence < 1:
        raise r.fail("training.gate.confidence", f"expected a confidence from 0.5 to below 1, got {gate.confidence:g}")
    search = r.mapping(r.get(raw, "search", "training", Mapping, {}), "training.search")
    r.unknown_keys(search, "training.search")
    trials = r.get(search, "trials", "training.search", int, 0)
    seed = r.get(raw, "seed", "training", int, 0)
    if trials < 0 or trials > 500:
        raise r.fail("training.search.trials", f"expected 0 to 500 trials, got {trials}")
    split = dict(
        r.mapping(r.get(raw, "split", "training", Mapping, {"train": 0.8, "val": 0.1, "test": 0.1}), "training.split")
    )
    if set(split) != {"train", "val", "test"} or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in split.values()
    ):
        raise r.fail("training.split", f"expected train, val and test shares >= 0, got {split!r}")
    if abs(sum(split.values()) - 1.0) > 1e-6:
        raise r.fail("training.split", f"shares must add up to 1, they add up to {sum(split.values()):g}")
    image_size = r.get(raw, "image_size", "training", int, 8)
    if not 2 <= image_size <= 64:
        raise r.fail("training.image_size", f"expected 2 to 64 pixels per side, got {image_size}")
    return TrainingSpec(gate, {k: float(v) for k, v in split.items()}, trials, seed, image_size)


def _synthetic(r: _Reader, raw: Mapping[str, Any]) -> SyntheticSpec:
    raw = r.mapping(raw, "synthetic")
    r.unknown_keys(raw, "synthetic")
    spec = SyntheticSpec(
        r.get(raw, "generator", "synthetic", str),
        r.get(raw, "rows", "synthetic", int, 2000),
        r.get(raw, "drifted_rows", "synthetic", int, 200),
        r.get(raw, "seed", "synthetic", int, 0),
    )
    if spec.rows < 1 or spec.drifted_rows < 0:
        raise r.fail("synthetic.rows", "rows must be >= 1 and drifted_rows >= 0")
    return spec


LOG_PHI = ("redact", "hash", "mask")
_ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")  # Databricks serving endpoint names


def _serving(r: _Reader, raw: Mapping[str, Any], use_case: str) -> ServingSpec:
    r.unknown_keys(raw, "serving")
    name = r.get(raw, "endpoint_name", "serving", str, use_case)
    if not _ENDPOINT_NAME.match(name):
        raise r.fail(
            "serving.endpoint_name",
            f"{name!r} is not an endpoint name: use 1 to 63 letters, digits, "
            "'-' or '_', starting with a letter or digit",
        )
    spec = ServingSpec(
        name,
        r.get(raw, "max_rows_per_request", "serving", int, 1000),
        r.get(raw, "max_body_bytes", "serving", int, 5_000_000),
        r.choice(raw, "log_phi", "serving", LOG_PHI, "redact"),
        _guardrails(r, r.mapping(r.get(raw, "guardrails", "serving", Mapping, {}), "serving.guardrails")),
        _ab_test(r, r.mapping(r.get(raw, "ab_test", "serving", Mapping, {}), "serving.ab_test")),
    )
    if spec.max_rows_per_request < 1 or spec.max_body_bytes < 1024:
        raise r.fail("serving", "max_rows_per_request must be >= 1 and max_body_bytes >= 1024")
    return spec


def _guardrails(r: _Reader, raw: Mapping[str, Any]) -> GuardrailsSpec:
    w = "serving.guardrails"
    r.unknown_keys(raw, w)
    pii_raw = r.mapping(r.get(raw, "pii", w, Mapping, {}), f"{w}.pii")
    r.unknown_keys(pii_raw, f"{w}.pii")
    pii = PiiGuardrailSpec(
        r.choice(pii_raw, "inputs", f"{w}.pii", PII_ACTIONS, "off"),
        r.choice(pii_raw, "outputs", f"{w}.pii", PII_ACTIONS, "off"),
    )
    floor = r.get(raw, "confidence_floor", w, (int, float), None)
    if floor is not None and not 0 < floor <= 1:
        raise r.fail(f"{w}.confidence_floor", f"expected a confidence above 0 and at most 1, got {floor:g}")
    limit = None
    if raw.get("rate_limit") is not None:
        lw = f"{w}.rate_limit"
        lraw = r.mapping(raw["rate_limit"], lw)
        r.unknown_keys(lraw, lw)
        rpm = r.get(lraw, "requests_per_minute", lw, int)
        burst = r.get(lraw, "burst", lw, int, max(1, rpm // 10))
        if rpm < 1:
            raise r.fail(f"{lw}.requests_per_minute", f"expected at least 1 request per minute, got {rpm}")
        if burst < 1:
            raise r.fail(f"{lw}.burst", f"expected a burst of at least 1 request, got {burst}")
        limit = RateLimitSpec(rpm, burst)
    return GuardrailsSpec(
        pii,
        r.get(raw, "enforce_response_schema", w, bool, False),
        None if floor is None else float(floor),
        limit,
    )


def _ab_test(r: _Reader, raw: Mapping[str, Any]) -> AbTestSpec:
    w = "serving.ab_test"
    r.unknown_keys(raw, w)
    percent = r.get(raw, "challenger_percent", w, int, 0)
    if not 0 <= percent <= 99:
        raise r.fail(
            f"{w}.challenger_percent",
            f"expected an integer 1..99 (the challenger's share of requests; 0 turns the A/B test off), got {percent}",
        )
    min_requests = r.get(raw, "min_requests", w, int, 100)
    if min_requests < 1:
        raise r.fail(f"{w}.min_requests", f"expected at least 1 request per arm, got {min_requests}")
    confidence = r.get(raw, "confidence", w, (int, float), 0.95)
    if not 0.5 <= confidence < 1:
        raise r.fail(f"{w}.confidence", f"expected a confidence of at least 0.5 and below 1, got {confidence:g}")
    return AbTestSpec(percent, min_requests, float(confidence))


def _monitoring(r: _Reader, raw: Mapping[str, Any]) -> MonitoringSpec:
    w = "monitoring"
    r.unknown_keys(raw, w)
    drift = r.mapping(r.get(raw, "drift", w, Mapping, {}), f"{w}.drift")
    r.unknown_keys(drift, f"{w}.drift")
    number = (int, float)

    def share(obj: Mapping[str, Any], key: str, where: str, default: float | None) -> float | None:
        value = r.get(obj, key, where, number, default) if key in obj or default is not None else None
        if value is not None and not 0 <= value <= 1:
            raise r.fail(f"{where}.{key}", f"expected a share between 0 and 1, got {value:g}")
        return None if value is None else float(value)

    spec = MonitoringSpec(
        window_minutes=r.get(raw, "window_minutes", w, int, 60),
        psi_threshold=float(r.get(drift, "psi", f"{w}.drift", number, 0.2)),
        p_value=share(drift, "p_value", f"{w}.drift", 0.05),  # type: ignore[arg-type]
        min_rows=r.get(raw, "min_rows", w, int, 30),
        max_error_rate=share(raw, "max_error_rate", w, 0.05),  # type: ignore[arg-type]
        max_latency_p95_ms=float(r.get(raw, "max_latency_p95_ms", w, number, 1000.0)),
        min_accuracy=share(raw, "min_accuracy", w, None),
        min_positive_feedback_rate=share(raw, "min_positive_feedback_rate", w, None),
    )
    if spec.window_minutes < 1 or spec.min_rows < 1 or spec.psi_threshold <= 0 or spec.max_latency_p95_ms <= 0:
        raise r.fail(w, "window_minutes, min_rows, drift.psi and max_latency_p95_ms must be > 0")
    return spec


def _retrain(r: _Reader, raw: Mapping[str, Any], sheet: SheetSpec) -> RetrainSpec:
    w = "retrain"
    r.unknown_keys(raw, w)
    phi = sheet.holds_phi
    spec = RetrainSpec(
        min_actionable_feedback=r.get(raw, "min_actionable_feedback", w, int, 20),
        min_reviewed_labels=r.get(raw, "min_reviewed_labels", w, int, 20),
        correction_confidence=float(r.get(raw, "correction_confidence", w, (int, float), 0.9)),
        confirm_thumbs_up=r.get(raw, "confirm_thumbs_up", w, bool, not phi),
        confirm_confidence=float(r.get(raw, "confirm_confidence", w, (int, float), 0.6)),
        feedback_weight=r.get(raw, "feedback_weight", w, int, 3),
        max_confirmation_share=float(r.get(raw, "max_confirmation_share", w, (int, float), 0.25)),
        on_breach=r.choice(raw, "on_breach", w, ("act", "off"), "act"),
        breach_min_new_labels=r.get(raw, "breach_min_new_labels", w, int, 20),
    )
    if (
        min(spec.min_actionable_feedback, spec.min_reviewed_labels, spec.feedback_weight, spec.breach_min_new_labels)
        < 1
    ):
        raise r.fail(
            w, "min_actionable_feedback, min_reviewed_labels, feedback_weight and breach_min_new_labels must be >= 1"
        )
    if not 0 <= spec.max_confirmation_share <= 1:
        raise r.fail(
            f"{w}.max_confirmation_share", f"expected a share between 0 and 1, got {spec.max_confirmation_share:g}"
        )
    for key in ("correction_confidence", "confirm_confidence"):
        if not 0 <= getattr(spec, key) <= 1:
            raise r.fail(f"{w}.{key}", f"expected a confidence between 0 and 1, got {getattr(spec, key):g}")
    return spec


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EMAIL = re.compile(r"^[^@\s<>,]+@[^@\s<>,]+$")
_SECRET_KEY = re.compile(r"(url|password|token|secret|key)$")


def _notifications(r: _Reader, raw: Mapping[str, Any]) -> NotificationsSpec:
    """`notifications`: channels name environment variables; a secret written into the file is refused."""
    w = "notifications"
    r.unknown_keys(raw, w)
    events = r.get(raw, "events", w, list, list(NOTIFY_EVENTS), expected=f"a list of {', '.join(NOTIFY_EVENTS)}")
    for i, event in enumerate(events):
        if event not in NOTIFY_EVENTS:
            raise r.fail(f"{w}.events[{i}]", f"unknown event {event!r}; expected one of {', '.join(NOTIFY_EVENTS)}")

    def channel(key: str) -> Mapping[str, Any] | None:
        if key not in raw:
            return None
        where = f"{w}.{key}"
        obj = r.mapping(raw[key] if raw[key] is not None else {}, where)
        allowed = allowed_keys(where)
        for k in obj:
            if k not in allowed and _SECRET_KEY.search(k):
                raise r.fail(
                    f"{where}.{k}",
                    "secrets are not written into use-case files; put the value in an environment variable and name "
                    f"that variable in one of {', '.join(sorted(a for a in allowed if a.endswith('_env')))}",
                )
        r.unknown_keys(obj, where)
        return obj

    def env(obj: Mapping[str, Any], key: str, where: str, default: str) -> str:
        value = r.get(obj, key, where, str, default)
        if not _ENV_NAME.match(value):  # never echo it: it may be the secret itself
            raise r.fail(
                f"{where}.{key}",
                "expected the name of an environment variable (letters, digits, _), not a value; secrets and "
                "addresses come from the environment only",
            )
        return value

    slack_raw, email_raw, hook_raw = channel("slack"), channel("email"), channel("webhook")
    slack = email = webhook = None
    if slack_raw is not None:
        slack = SlackChannelSpec(env(slack_raw, "webhook_url_env", f"{w}.slack", "ONTOS_SLACK_WEBHOOK_URL"))
    if hook_raw is not None:
        webhook = WebhookChannelSpec(env(hook_raw, "url_env", f"{w}.webhook", "ONTOS_NOTIFY_WEBHOOK_URL"))
    if email_raw is not None:
        e = f"{w}.email"
        to = r.get(email_raw, "to", e, (list, str), expected="an address or a list of addresses")
        to = [to] if isinstance(to, str) else to
        if not to:
            raise r.fail(f"{e}.to", "expected at least one address")
        for i, address in enumerate(to):
            if not isinstance(address, str) or not _EMAIL.match(address):
                raise r.fail(f"{e}.to[{i}]", f"{address!r} is not an e-mail address")
        sender = r.get(email_raw, "from", e, str, expected="an e-mail address")
        if not _EMAIL.match(sender):
            raise r.fail(f"{e}.from", f"{sender!r} is not an e-mail address")
        email = EmailChannelSpec(
            to=tuple(to),
            sender=sender,
            smtp_host_env=env(email_raw, "smtp_host_env", e, "ONTOS_SMTP_HOST"),
            smtp_port_env=env(email_raw, "smtp_port_env", e, "ONTOS_SMTP_PORT"),
            smtp_user_env=env(email_raw, "smtp_user_env", e, "ONTOS_SMTP_USER"),
            smtp_password_env=env(email_raw, "smtp_password_env", e, "ONTOS_SMTP_PASSWORD"),
            tls=r.choice(email_raw, "tls", e, ("starttls", "ssl", "none"), "starttls"),
        )
    return NotificationsSpec(tuple(dict.fromkeys(events)), slack, email, webhook)
