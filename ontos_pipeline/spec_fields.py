"""Every field of a use-case YAML file: path, type, default, meaning and an example.

This table is the one list of fields: the spec loader accepts exactly the keys listed here (anything else is an
"unknown field" error naming the expected ones), defaults of dataclass-backed fields are read from the spec classes,
and `docs/use-case-reference.md` is generated from it (`uv run ontos specs --reference`), so the reference cannot
drift from the code. Paths use `<name>` for a key chosen by the user and `[]` for a list item.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

COLUMN_TYPES = ("string", "integer", "double", "boolean", "date", "timestamp")
CATEGORIES = ("text", "numeric", "categorical", "image", "metadata")
JOIN_KINDS = ("left", "inner")
RESPONSE_KINDS = ("enum", "number", "object", "text")
USES = ("training", "evaluation", "serving")
ITEM_KEY = "item_ref"
# The headline metrics a promotion gate can use, by response kind (the first is the default).
METRICS_BY_KIND: dict[str, tuple[str, ...]] = {
    "enum": ("accuracy", "macro_f1"),
    "number": ("r2", "mae", "rmse"),
    "object": ("field_exact_match", "micro_f1"),
    "text": ("token_f1", "exact_match"),
}
REQUIRED = "required"


@dataclass(frozen=True)
class ClassDefault:
    """The default is the one of `attribute` of the spec dataclass `cls` (read by the reference)."""

    cls: str
    attribute: str


@dataclass(frozen=True)
class SpecField:
    path: str
    type: str
    meaning: str
    default: Any = None  # REQUIRED, a literal, or a ClassDefault read from the spec dataclass
    example: str = ""

    @property
    def key(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def parent(self) -> str:
        return self.path.rsplit(".", 1)[0] if "." in self.path else ""


_UC = "the use case's name"
FIELDS: tuple[SpecField, ...] = (
    SpecField("name", "identifier", "The use case; one Dagster partition", REQUIRED, "penguins"),
    SpecField("title", "string", "Display title", "the name, capitalized", "Penguin species"),
    SpecField("description", "string", "What the use case is for", "", "Predict the species from measurements."),
    # -- sheet ---------------------------------------------------------------------------------------------------
    SpecField("sheet", "mapping", "The sheet: source tables, joins and typed columns", REQUIRED),
    SpecField("sheet.primary", "source name", "The source each item comes from", "the first source", "penguins"),
    SpecField("sheet.sources", "mapping", "Source tables by name (at least one)", REQUIRED),
    SpecField("sheet.sources.<source>", "mapping", "One source table", REQUIRED),
    SpecField(
        "sheet.sources.<source>.table",
        "table name",
        "table, schema.table or catalog.schema.table",
        REQUIRED,
        "raw.penguins",
    ),
    SpecField(
        "sheet.sources.<source>.columns",
        "mapping",
        f"column -> type ({', '.join(COLUMN_TYPES)}) of the source",
        REQUIRED,
        "{item_ref: string, bill_length_mm: double}",
    ),
    SpecField("sheet.joins", "list", "How the other sources join the primary one", "[]"),
    SpecField("sheet.joins[].source", "source name", "The source joined", REQUIRED, "islands"),
    SpecField("sheet.joins[].left", "source.column", "Key in a source already joined", REQUIRED, "penguins.island"),
    SpecField("sheet.joins[].right", "source.column", "Key in the joined source", REQUIRED, "islands.island"),
    SpecField("sheet.joins[].how", f"one of {', '.join(JOIN_KINDS)}", "Join kind", ClassDefault("JoinSpec", "how")),
    SpecField("sheet.columns", "list", f"The sheet's columns; one named {ITEM_KEY} is the item key", REQUIRED),
    SpecField("sheet.columns[].name", "identifier", "Column name in the sheet and the template", REQUIRED, "bill"),
    SpecField("sheet.columns[].from", "source.column", "Where the value comes from", REQUIRED, "penguins.bill_mm"),
    SpecField("sheet.columns[].type", f"one of {', '.join(COLUMN_TYPES)}", "Type in the sheet", REQUIRED, "double"),
    SpecField(
        "sheet.columns[].category",
        f"one of {', '.join(CATEGORIES)}",
        "How models use it: numbers as numbers, text as text, categorical one-hot, image pixels, metadata not at all",
        REQUIRED,
        "numeric",
    ),
    SpecField(
        "sheet.columns[].nullable", "boolean", "Nulls allowed (a frame rule)", ClassDefault("ColumnSpec", "nullable")
    ),
    SpecField("sheet.columns[].range", "[min, max]", "Allowed numeric range (a frame rule)", None, "[0, 100]"),
    SpecField("sheet.columns[].values", "list of strings", "Allowed values (a frame rule)", None, "[male, female]"),
    SpecField(
        "sheet.columns[].tags",
        "list of tags",
        "e.g. phi: prohibits training on the column's items unless consented",
        "[]",
        "[phi]",
    ),
    SpecField("sheet.governance", "mapping", "Usage governance of the sheet", None),
    SpecField(
        "sheet.governance.consent_column",
        "sheet column (boolean)",
        "Items whose value is true may be trained on despite PHI columns",
        None,
        "consent_training",
    ),
    # -- labels --------------------------------------------------------------------------------------------------
    SpecField("labels", "mapping", "Where labels come from", REQUIRED),
    SpecField("labels.label_type", "identifier", "The kind of label (part of the canonical label key)", REQUIRED),
    SpecField(
        "labels.import_table",
        "table name",
        "A table of labels in the import layout (below)",
        None,
        "raw.penguin_labels",
    ),
    SpecField(
        "labels.column",
        "source.column",
        "A label column of the primary source (not a sheet column)",
        None,
        "penguins.species",
    ),
    SpecField(
        "labels.min_coverage",
        "number 0..1",
        "Share of items that must carry a usable label (a check)",
        ClassDefault("LabelsSpec", "min_coverage"),
    ),
    # -- template ------------------------------------------------------------------------------------------------
    SpecField("template", "mapping", "The prompt template and its response schema", REQUIRED),
    SpecField("template.name", "identifier", "Template name, unique across use cases", REQUIRED, "penguins_v1"),
    SpecField("template.system_prompt", "string", "System message", "", "Predict the species."),
    SpecField(
        "template.prompt",
        "Jinja2 text",
        "User message, rendered in the sandbox from the sheet columns",
        REQUIRED,
        "'Bill: {{ bill }} mm'",
    ),
    SpecField(
        "template.response_schema",
        "JSON Schema",
        "A string enum, a number or integer, an object with properties, or a string (free text)",
        REQUIRED,
        "{type: string, enum: [Adelie, Gentoo]}",
    ),
    SpecField("template.variables", "mapping", "Template variable -> sheet column, when they differ", "{}"),
    SpecField("template.variables.<variable>", "sheet column", "The column a variable reads", REQUIRED, "bill"),
    # -- training ------------------------------------------------------------------------------------------------
    SpecField("training", "mapping", "Split, promotion gate and search", "{}"),
    SpecField("training.gate", "mapping", "The promotion gate a challenger must pass", "the metric's default"),
    SpecField(
        "training.gate.metric",
        "metric of the response kind",
        "; ".join(f"{k}: {', '.join(v)}" for k, v in METRICS_BY_KIND.items()) + " (first is the default)",
        "the kind's first metric",
        "accuracy",
    ),
    SpecField("training.gate.minimum", "number", "Smallest acceptable value of the metric", 0.0, "0.8"),
    SpecField(
        "training.gate.confidence",
        "number in [0.5, 1)",
        "Confidence of the paired bootstrap interval of challenger minus champion: a challenger whose interval lies "
        "below zero (worse beyond noise) is kept out",
        ClassDefault("GateSpec", "confidence"),
    ),
    SpecField(
        "training.split", "mapping", "train / val / test shares (add up to 1)", ClassDefault("TrainingSpec", "split")
    ),
    SpecField("training.split.train", "number", "Share trained on", 0.8),
    SpecField("training.split.val", "number", "Share models are chosen on", 0.1),
    SpecField("training.split.test", "number", "Share held out for evaluation", 0.1),
    SpecField("training.search", "mapping", "Hyper-parameter search of the best family", "{}"),
    SpecField(
        "training.search.trials",
        "integer 0..500",
        "Optuna trials (0: no search)",
        ClassDefault("TrainingSpec", "search_trials"),
    ),
    SpecField("training.seed", "integer", "Seed of the trainer", ClassDefault("TrainingSpec", "seed")),
    SpecField(
        "training.image_size",
        "integer 2..64",
        "Images become image_size x image_size RGB pixels",
        ClassDefault("TrainingSpec", "image_size"),
    ),
    # -- serving, monitoring, retrain ----------------------------------------------------------------------------
    SpecField("serving", "mapping", "The serving endpoint", "{}"),
    SpecField("serving.endpoint_name", "endpoint name", "1-63 letters, digits, - or _", _UC),
    SpecField(
        "serving.max_rows_per_request",
        "integer >= 1",
        "Records per request",
        ClassDefault("ServingSpec", "max_rows_per_request"),
    ),
    SpecField(
        "serving.max_body_bytes", "integer >= 1024", "Request body limit", ClassDefault("ServingSpec", "max_body_bytes")
    ),
    SpecField(
        "serving.log_phi",
        "redact, hash or mask",
        "How PHI-tagged columns reach the inference log: replaced, keyed hash (ONTOS_LOG_KEY), or PHI patterns masked",
        ClassDefault("ServingSpec", "log_phi"),
    ),
    SpecField(
        "serving.guardrails",
        "mapping",
        "Guardrails on the endpoint (README, Guardrails); on Databricks, AI Gateway guardrails and rate limits",
        "{}",
    ),
    SpecField(
        "serving.guardrails.pii", "mapping", "PII (e-mail, phone, SSN, date of birth) in requests and answers", "{}"
    ),
    SpecField(
        "serving.guardrails.pii.inputs",
        "off, redact or refuse",
        "PII in a request: the model sees it masked (`[EMAIL]`), or the request gets a 400 naming rule and column",
        ClassDefault("PiiGuardrailSpec", "inputs"),
    ),
    SpecField(
        "serving.guardrails.pii.outputs",
        "off, redact or refuse",
        "PII in an answer: masked, or the answer is withheld (400)",
        ClassDefault("PiiGuardrailSpec", "outputs"),
    ),
    SpecField(
        "serving.guardrails.enforce_response_schema",
        "true or false",
        "An answer that does not validate against the response schema is not returned (400)",
        ClassDefault("GuardrailsSpec", "enforce_response_schema"),
    ),
    SpecField(
        "serving.guardrails.confidence_floor",
        "number 0..1",
        "Below it the answer is an abstain and the item is queued for human review (an annotation task)",
        ClassDefault("GuardrailsSpec", "confidence_floor"),
        "0.4",
    ),
    SpecField("serving.guardrails.rate_limit", "mapping", "A token bucket per caller (token name); over it: 429"),
    SpecField(
        "serving.guardrails.rate_limit.requests_per_minute",
        "integer >= 1",
        "Refill rate of the bucket",
        REQUIRED,
        "600",
    ),
    SpecField(
        "serving.guardrails.rate_limit.burst",
        "integer >= 1",
        "Bucket size: requests allowed at once",
        "requests_per_minute / 10",
        "60",
    ),
    SpecField(
        "serving.ab_test",
        "mapping",
        "A/B traffic split (README, A/B tests): a challenger that passed its gate serves a share of requests next to "
        "the champion until the arms' comparison promotes or ends it",
        "{}",
    ),
    SpecField(
        "serving.ab_test.challenger_percent",
        "integer 0..99",
        "Share of requests (by a stable hash of the request id) the challenger answers; 0: off, promote at once",
        ClassDefault("AbTestSpec", "challenger_percent"),
        "10",
    ),
    SpecField(
        "serving.ab_test.min_requests",
        "integer >= 1",
        "Requests each arm needs before the comparison may promote or end the test",
        ClassDefault("AbTestSpec", "min_requests"),
    ),
    SpecField(
        "serving.ab_test.confidence",
        "number 0.5..1",
        "Confidence of the interval of challenger - champion thumbs-up share (and error rate) that decides",
        ClassDefault("AbTestSpec", "confidence"),
    ),
    SpecField("monitoring", "mapping", "Monitoring window and alert thresholds", "{}"),
    SpecField(
        "monitoring.window_minutes",
        "integer >= 1",
        "Window of one report",
        ClassDefault("MonitoringSpec", "window_minutes"),
    ),
    SpecField("monitoring.drift", "mapping", "Drift thresholds", "{}"),
    SpecField(
        "monitoring.drift.psi",
        "number > 0",
        "PSI at or above this is drift",
        ClassDefault("MonitoringSpec", "psi_threshold"),
    ),
    SpecField(
        "monitoring.drift.p_value",
        "number 0..1",
        "KS / chi-square test level",
        ClassDefault("MonitoringSpec", "p_value"),
    ),
    SpecField(
        "monitoring.min_rows",
        "integer >= 1",
        "Fewer served rows: no drift verdict",
        ClassDefault("MonitoringSpec", "min_rows"),
    ),
    SpecField(
        "monitoring.max_error_rate", "number 0..1", "Alert above this", ClassDefault("MonitoringSpec", "max_error_rate")
    ),
    SpecField(
        "monitoring.max_latency_p95_ms",
        "number > 0",
        "Alert above this",
        ClassDefault("MonitoringSpec", "max_latency_p95_ms"),
    ),
    SpecField(
        "monitoring.min_accuracy",
        "number 0..1",
        "Alert below this (from feedback)",
        ClassDefault("MonitoringSpec", "min_accuracy"),
    ),
    SpecField(
        "monitoring.min_positive_feedback_rate",
        "number 0..1",
        "Alert below this",
        ClassDefault("MonitoringSpec", "min_positive_feedback_rate"),
    ),
    SpecField("retrain", "mapping", "When feedback triggers a retrain", "{}"),
    SpecField(
        "retrain.min_actionable_feedback",
        "integer >= 1",
        "Corrections + thumbs-down since the last retrain",
        ClassDefault("RetrainSpec", "min_actionable_feedback"),
    ),
    SpecField(
        "retrain.min_reviewed_labels",
        "integer >= 1",
        "Review decisions + imported labels since the last retrain",
        ClassDefault("RetrainSpec", "min_reviewed_labels"),
    ),
    SpecField(
        "retrain.correction_confidence",
        "number 0..1",
        "Confidence of a label made from a correction",
        ClassDefault("RetrainSpec", "correction_confidence"),
    ),
    SpecField(
        "retrain.confirm_thumbs_up",
        "boolean",
        "A thumbs-up confirms the answer as a label",
        "false for PHI sheets, else true",
    ),
    SpecField(
        "retrain.confirm_confidence",
        "number 0..1",
        "Confidence of a confirmed answer",
        ClassDefault("RetrainSpec", "confirm_confidence"),
    ),
    SpecField(
        "retrain.feedback_weight",
        "integer >= 1",
        "Times an item corrected by feedback counts in training",
        ClassDefault("RetrainSpec", "feedback_weight"),
    ),
    SpecField(
        "retrain.max_confirmation_share",
        "number 0..1",
        "Largest share of the train rows that thumbs-up confirmations (the model's own answers) may make; they are "
        "never weighted",
        ClassDefault("RetrainSpec", "max_confirmation_share"),
    ),
    SpecField(
        "retrain.on_breach",
        "act | off",
        "A monitoring breach (drift, accuracy or thumbs-up below minimum) requests a retrain when enough new labels "
        "exist, else opens annotation tasks for the drifted region (breach_sensor)",
        ClassDefault("RetrainSpec", "on_breach"),
    ),
    SpecField(
        "retrain.breach_min_new_labels",
        "integer >= 1",
        "Labels newer than the champion's training run needed for a breach to request a retrain",
        ClassDefault("RetrainSpec", "breach_min_new_labels"),
    ),
    # -- notifications -------------------------------------------------------------------------------------------
    SpecField(
        "notifications",
        "mapping",
        "Who hears about run failures, gate decisions, new alerts and new annotation tasks; channels name "
        "environment variables (a secret written here is refused); a channel whose variable is unset is skipped",
        "{} (no channel)",
    ),
    SpecField(
        "notifications.events",
        "list of run_failure, gate, alert, tasks",
        "The events sent",
        "all four",
        "[run_failure, gate]",
    ),
    SpecField("notifications.slack", "mapping", "A Slack incoming webhook", None, "{}"),
    SpecField(
        "notifications.slack.webhook_url_env",
        "variable name",
        "Holds the webhook URL",
        ClassDefault("SlackChannelSpec", "webhook_url_env"),
    ),
    SpecField("notifications.email", "mapping", "E-mail over SMTP", None),
    SpecField("notifications.email.to", "address or list", "Recipients", REQUIRED, "[ml-team@example.com]"),
    SpecField("notifications.email.from", "address", "Sender", REQUIRED, "ontos@example.com"),
    SpecField(
        "notifications.email.smtp_host_env",
        "variable name",
        "Holds the SMTP host",
        ClassDefault("EmailChannelSpec", "smtp_host_env"),
    ),
    SpecField(
        "notifications.email.smtp_port_env",
        "variable name",
        "Holds the port (unset: 587, 465 for ssl, 25 for none)",
        ClassDefault("EmailChannelSpec", "smtp_port_env"),
    ),
    SpecField(
        "notifications.email.smtp_user_env",
        "variable name",
        "Holds the login user (unset: no login)",
        ClassDefault("EmailChannelSpec", "smtp_user_env"),
    ),
    SpecField(
        "notifications.email.smtp_password_env",
        "variable name",
        "Holds the login password",
        ClassDefault("EmailChannelSpec", "smtp_password_env"),
    ),
    SpecField(
        "notifications.email.tls",
        "starttls, ssl or none",
        "STARTTLS after connecting, TLS from the start (SMTPS), or plain (a local relay)",
        ClassDefault("EmailChannelSpec", "tls"),
    ),
    SpecField("notifications.webhook", "mapping", "A generic JSON webhook (POST)", None),
    SpecField(
        "notifications.webhook.url_env",
        "variable name",
        "Holds the URL",
        ClassDefault("WebhookChannelSpec", "url_env"),
    ),
    # -- synthetic -----------------------------------------------------------------------------------------------
    SpecField("synthetic", "mapping", "Demo data only: the generator writes the source tables", None),
    SpecField("synthetic.generator", "generator name", "One of synthetic_data/generator.py's", REQUIRED),
    SpecField("synthetic.rows", "integer >= 1", "Items generated", 2000),
    SpecField("synthetic.drifted_rows", "integer >= 0", "Items of the drifted batch", 200),
    SpecField("synthetic.seed", "integer", "Generator seed", 0),
)
_BY_PARENT: dict[str, set[str]] = {}
for _f in FIELDS:
    _BY_PARENT.setdefault(_f.parent, set()).add(_f.key)


def allowed_keys(where: str) -> set[str]:
    """The keys a mapping at `where` (a loader path such as `sheet.columns[2]`) may hold."""
    pattern = re.sub(r"\[\d+\]", "[]", where)
    pattern = re.sub(r"^sheet\.sources\.[^.]+", "sheet.sources.<source>", pattern)
    return _BY_PARENT.get(pattern, set())
