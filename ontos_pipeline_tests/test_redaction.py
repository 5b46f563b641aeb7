"""What the inference log keeps of a request to a PHI endpoint: PHI-tagged columns as `serving.log_phi` declares,
and every PHI pattern masked everywhere else (deploy.serving.redaction). No Spark: pure functions on the spec."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ontos_pipeline.deploy.serving.redaction import LogRedaction, hidden_in_log
from ontos_pipeline.platform.phi import found
from ontos_pipeline.specs import load_use_cases
from ontos_pipeline_tests.conftest import DEMO_USE_CASES

TEXT = "Patient Jo Park, DOB: 1961-04-02, SSN 123-45-6789, jo.park@example.org. Total $412.50 on 2025-02-03."
RECORD = {"item_ref": "INV-1", "payer": "Aetna", "invoice_text": TEXT, "note": "call (555) 123-4567"}


def _spec(mode: str):
    spec = load_use_cases(DEMO_USE_CASES)["invoice_extraction"]
    return replace(spec, serving=replace(spec.serving, log_phi=mode))


@pytest.mark.parametrize("mode", ["redact", "hash", "mask"])
def test_phi_tagged_columns_are_logged_as_declared_and_no_phi_pattern_is_left(mode):
    redaction = LogRedaction.of(_spec(mode), key="k" * 32)
    [logged] = redaction.records([RECORD])
    prompt = redaction.prompt(f"Payer: Aetna\n---\n{TEXT}\n---\nExtract", [RECORD])
    response = redaction.masked([{"response": {"provider": "Lakeside", "note": "jo.park@example.org"}}])
    assert logged["item_ref"] == "INV-1" and logged["payer"] == "Aetna"  # what monitoring and feedback use
    assert logged["note"] == "call [PHONE]"  # untagged text: patterns masked
    for text in (str(logged), prompt, str(response), redaction.text(f"record 0: {TEXT}"), redaction.body(TEXT)):
        assert found(text) == [], text
    if mode == "redact":
        assert logged["invoice_text"] == "[REDACTED invoice_text]" and "[REDACTED invoice_text]" in prompt
        assert "Jo Park" not in prompt
    elif mode == "hash":
        again = LogRedaction.of(_spec(mode), key="k" * 32).records([RECORD])[0]["invoice_text"]
        other = LogRedaction.of(_spec(mode), key="j" * 32).records([RECORD])[0]["invoice_text"]
        assert logged["invoice_text"].startswith("hmac-sha256:") and again == logged["invoice_text"] != other
        assert logged["invoice_text"] in prompt and "Jo Park" not in prompt
    else:
        assert logged["invoice_text"].startswith("Patient Jo Park, [DATE_OF_BIRTH], SSN [SSN], [EMAIL]")
        assert "2025-02-03" in logged["invoice_text"]  # an invoice date is not a date of birth
    assert hidden_in_log(_spec(mode)) == (() if mode == "mask" else ("invoice_text",))


def test_hash_needs_a_key_and_endpoints_without_phi_log_as_sent():
    with pytest.raises(ValueError, match="needs a secret key in ONTOS_LOG_KEY"):
        LogRedaction.of(_spec("hash"))
    plain = LogRedaction.of(load_use_cases(DEMO_USE_CASES)["predictive_maintenance"])
    assert not plain.active and plain.records([RECORD]) == [RECORD] and plain.text(TEXT) == TEXT
