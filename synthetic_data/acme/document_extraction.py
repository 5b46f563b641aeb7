"""Compliance document extraction: document text -> {cert_id, standard, issue_date, expiry_date, status}.

Certificates, audit letters and declarations of conformity in four layouts, dates in six formats, status in
several wordings; the label (ISO dates) is the truth except for ~5% of labels with one wrong field. Drifted
batch: a new supplier portal export layout and date format, more declarations (RoHS), older documents and
therefore more expired certificates.
"""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np

from synthetic_data import blocks as g

PREFIX = "DX"
PRIMARY = "acme_raw.compliance_documents"
LABELS = "acme_raw.document_extraction_labels"
COLUMNS = {
    "item_ref": "string",
    "document_id": "string",
    "supplier": "string",
    "document_type": "string",
    "received_at": "timestamp",
    "document_text": "string",
}
DIMENSIONS: dict = {}

SUPPLIERS = [
    "Kestrel Components Ltd.",
    "Norvale Precision GmbH",
    "Sunward Electronics Co.",
    "Halcyon Metals Inc.",
    "Bluefin Plastics S.A. de C.V.",
    "Tamarind Circuits Sdn. Bhd.",
    "Orrin Cable Works",
    "Cobalt Ridge Sensors",
    "Meridian Fasteners LLC",
    "Aster Optics Ltd.",
    "Pinecrest Coatings",
    "Larkfield Magnetics",
]
NEW_SUPPLIERS = ["Vantor Semiconductor Pte. Ltd.", "Eastlake Power Modules"]  # only in the drifted batch
DOCUMENT_TYPES = ["certificate", "audit_letter", "declaration"]
CERTIFICATE, AUDIT_LETTER, DECLARATION = range(3)
TYPE_MIX = {False: [0.55, 0.2, 0.25], True: [0.3, 0.15, 0.55]}
STANDARDS = ["ISO 9001", "ISO 13485", "ISO/IEC 17025", "IEC 61010-1", "RoHS"]
STANDARD_TEXT = [
    "ISO 9001:2015",
    "ISO 13485:2016",
    "ISO/IEC 17025:2017",
    "IEC 61010-1:2010",
    "RoHS Directive 2011/65/EU",
]
STANDARD_MIX = np.array(  # per document type: certificate, audit_letter, declaration
    [[0.45, 0.25, 0.2, 0.1, 0.0], [0.5, 0.3, 0.2, 0.0, 0.0], [0.0, 0.0, 0.0, 0.4, 0.6]]
)
VALID_YEARS = [3, 3, 3, 3, 2]
ISSUERS = [
    ("Northbridge Assessment Ltd.", "NBA"),
    ("QualiCert International", "QCI"),
    ("Global Conformity Services", "GCS"),
]
STATUSES = ["valid", "expired", "suspended"]
STATUS_WORDS = {
    "valid": ["valid", "active", "in force"],
    "expired": ["expired", "lapsed"],
    "suspended": ["suspended", "temporarily suspended"],
}


def dimensions(rng: np.random.Generator, rows: int) -> dict:
    return {}


def block(ctx: g.BlockContext) -> g.Block:
    rng, n, drifted = ctx.rng, ctx.n, ctx.drifted
    suppliers = SUPPLIERS + NEW_SUPPLIERS if drifted else SUPPLIERS
    received_at = ctx.timestamps_us()
    received = received_at // g.US_PER_DAY
    doc_type = g.draw(rng, TYPE_MIX[drifted], n)
    supplier = rng.integers(0, len(suppliers), n)
    standard = g.draw_each(rng, STANDARD_MIX[doc_type])
    issuer = rng.integers(0, len(ISSUERS), n)  # the certification body (declarations are self-issued)
    digits = rng.integers(4, 9, n)
    number = rng.integers(10 ** (digits - 1), 10**digits)
    issued = received - (rng.integers(200, 6 * 365, n) if drifted else rng.integers(30, 4 * 365, n))
    suspended = rng.random(n) < (0.1 if drifted else 0.06)
    wording, style, layout = rng.integers(0, 6, n), rng.integers(0, len(g.DATE_STYLES), n), rng.random(n)
    supersedes = np.where(rng.random(n) < 0.2, rng.integers(1000, 10000, n), 0)
    noisy = rng.random(n) < ctx.label_noise

    texts, labels = [], []
    for i in range(n):
        prefix = "DOC" if doc_type[i] == DECLARATION else ISSUERS[issuer[i]][1]
        truth = _certificate(f"{prefix}-{number[i]}", standard[i], issued[i], received[i], suspended[i])
        if drifted and layout[i] < 0.4:
            texts.append(_portal_export(truth, suppliers[supplier[i]], wording[i]))
        else:
            texts.append(
                _render(
                    truth,
                    doc_type[i],
                    suppliers[supplier[i]],
                    ISSUERS[issuer[i]][0],
                    wording[i],
                    style[i],
                    layout[i],
                    supersedes[i],
                )
            )
        labels.append(_alter(rng, truth) if noisy[i] else truth)

    columns = {
        "item_ref": ctx.refs,
        "document_id": [f"SQD-{v:010X}" for v in rng.integers(0, 16**10, n).tolist()],
        "supplier": g.pick(suppliers, supplier),
        "document_type": g.pick(DOCUMENT_TYPES, doc_type),
        "received_at": received_at,
        "document_text": texts,
    }

    def conflicts(rng: np.random.Generator, rows: np.ndarray) -> list[str]:
        return [json.dumps(_alter(rng, labels[i])) for i in rows]

    label_json = [json.dumps(label) for label in labels]
    return g.Block(columns, g.label_batch(ctx, label_json, received_at, conflicts, noisy=noisy))


def _certificate(cert_id: str, standard: int, issued: int, received: int, suspended: bool) -> dict:
    """The true fields: the certificate expires VALID_YEARS after issue; expired if before receipt."""
    issue = g.to_date(issued)
    expiry = _add_years(issue, VALID_YEARS[standard]) - timedelta(days=1)
    status = "expired" if expiry < g.to_date(received) else "suspended" if suspended else "valid"
    return {
        "cert_id": cert_id,
        "standard": STANDARDS[standard],
        "issue_date": issue.isoformat(),
        "expiry_date": expiry.isoformat(),
        "status": status,
    }


def _add_years(d: date, years: int) -> date:
    try:
        return d.replace(year=d.year + years)
    except ValueError:  # 29 February
        return d.replace(year=d.year + years, day=28)


def _alter(rng: np.random.Generator, label: dict) -> dict:
    """The label with one field wrong (still valid against the schema)."""
    out = dict(label)
    field = ["cert_id", "standard", "expiry_date", "status"][rng.integers(4)]
    if field == "cert_id":
        prefix, digits = out["cert_id"].split("-")
        out["cert_id"] = f"{prefix}-{(int(digits) + int(rng.integers(1, 999))) % 10 ** len(digits):0{len(digits)}d}"
    elif field == "standard":
        out["standard"] = STANDARDS[(STANDARDS.index(out["standard"]) + int(rng.integers(1, 5))) % 5]
    elif field == "expiry_date":
        out["expiry_date"] = _add_years(date.fromisoformat(out["expiry_date"]), 1).isoformat()
    else:
        out["status"] = STATUSES[(STATUSES.index(out["status"]) + int(rng.integers(1, 3))) % 3]
    return out


def _portal_export(truth: dict, supplier: str, wording: int) -> str:
    """The drifted batch's new layout: a one-line export from the supplier portal, dates like 14-MAR-2025."""
    standard = STANDARD_TEXT[STANDARDS.index(truth["standard"])]
    status = _status_word(truth["status"], wording).upper()
    issue, expiry = (date.fromisoformat(truth[k]).strftime("%d-%b-%Y").upper() for k in ("issue_date", "expiry_date"))
    return (
        f"COMPLIANCE SUMMARY ({supplier})\n"
        f"ref={truth['cert_id']}; std={standard}; issued={issue}; expires={expiry}; state={status}\n"
        "Generated by the supplier portal."
    )


def _status_word(status: str, wording: int) -> str:
    words = STATUS_WORDS[status]
    return words[wording % len(words)]


def _render(
    truth: dict,
    doc_type: int,
    supplier: str,
    issuer: str,
    wording: int,
    style: int,
    layout: float,
    supersedes: int,
) -> str:
    standard = STANDARD_TEXT[STANDARDS.index(truth["standard"])]
    status = _status_word(truth["status"], wording)
    issue, expiry = (g.format_date(date.fromisoformat(truth[k]), style) for k in ("issue_date", "expiry_date"))
    cert_id = truth["cert_id"]
    if doc_type == DECLARATION:
        return (
            "EU DECLARATION OF CONFORMITY\n"
            f"Manufacturer: {supplier}\n"
            "We declare under our sole responsibility that the products listed in the annex comply with "
            f"{standard}.\n"
            f"Declaration reference: {cert_id}\n"
            f"Issued: {issue}    Expires: {expiry}\n"
            f"Current status: {status}\n"
            "Signed on behalf of the manufacturer by the Compliance Manager."
        )
    if doc_type == AUDIT_LETTER:
        return (
            f"{issuer}\nCertification Office\n\n"
            f"To: Supplier Quality, {supplier}\n"
            f"Subject: Surveillance audit outcome - {standard}\n\n"
            "Following the surveillance audit of your site, we confirm the status of certificate "
            f"{cert_id} ({standard}) as {status}. "
            f"The certificate was issued on {issue} and expires on {expiry}.\n\n"
            "Kind regards,\nCertification Office"
        )
    if layout < 0.5:
        previous = f"\nThis certificate supersedes {cert_id.split('-')[0]}-{supersedes}." if supersedes else ""
        return (
            f"CERTIFICATE OF REGISTRATION\n{issuer}\n\n"
            f"This is to certify that the management system of\n{supplier}\n"
            f"has been assessed and found to conform to the requirements of\n{standard}\n\n"
            f"Certificate number: {cert_id}\nDate of issue: {issue}\nExpiry date: {expiry}\n"
            f"Certificate status: {status}{previous}"
        )
    return (
        f"{issuer} | Certification record\n"
        f"{'-' * 40}\n"
        f"Holder ........... {supplier}\n"
        f"Standard ......... {standard}\n"
        f"Cert. No. ........ {cert_id}\n"
        f"Issued ........... {issue}\n"
        f"Valid until ...... {expiry}\n"
        f"Status ........... {status.upper()}"
    )
