"""Medical invoice extraction: invoice text -> {provider, invoice_date, total_amount, cpt_codes}.

~60% of patients consented to training: their invoices are de-identified ("Patient: [REDACTED]") and their
labels may be used for training. The others' invoices carry PHI -- name with date of birth, phone, email,
member id and MRN, and for some an SSN-like id -- and their labels are prohibited from training (evaluation
and serving only). All names and numbers are synthetic (555-01xx phones, example.* emails, 9xx SSNs).
Drifted batch: two new providers, whose billing platform is set to a European locale (amounts written "$1.234,56":
a layout only their corrected invoices can teach), a new price list (+35%), more services per visit, more
Medicare patients.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from functools import partial

import numpy as np

from synthetic_data import blocks as g

PREFIX = "MI"
PRIMARY = "acme_raw.medical_invoices"
LABELS = "acme_raw.invoice_extraction_labels"
COLUMNS = {
    "item_ref": "string",
    "invoice_id": "string",
    "patient_id": "string",
    "received_at": "timestamp",
    "invoice_text": "string",
}
PATIENTS = "acme_raw.patients"
DIMENSIONS = {
    PATIENTS: {
        "patient_id": "string",
        "patient_name": "string",
        "date_of_birth": "date",
        "payer": "string",
        "consent_training": "boolean",
    }
}

CONSENT_RATE = 0.6
# Common US given names and surnames; the generated combinations are synthetic people.
FIRST_NAMES = (  # noqa: SIM905 (a word list reads better than 32 quoted strings)
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard Susan Joseph "
    "Jessica Thomas Sarah Carlos Maria Daniel Nancy Wei Mei Ahmed Fatima Raj Priya Luis Ana Kevin Laura"
).split()
LAST_NAMES = (  # noqa: SIM905
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez Wilson "
    "Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Clark Nguyen Patel Chen Kim"
).split()
PAYERS = ["Medicare", "Medicaid", "Aetna", "BlueCross", "UnitedHealth", "SelfPay"]
PAYER_CODES = ["MCR", "MCD", "AET", "BCB", "UHC", "SP"]
AREA_CODES = ["512", "737", "210", "713", "214", "915"]
EMAIL_DOMAINS = ["example.com", "example.org", "example.net"]
PROVIDERS = [
    ("Lakeside Family Medicine", "1200 Lakeshore Blvd, Suite 300, Austin, TX 78701"),
    ("Cedar Valley Imaging", "45 Cedar Valley Rd, Round Rock, TX 78664"),
    ("Austin Heart & Vascular Clinic", "3801 N Lamar Blvd, Austin, TX 78756"),
    ("Bayview Orthopedics", "910 Bayview Dr, Corpus Christi, TX 78401"),
    ("Hill Country Labs", "77 Ranch Rd 620, Lakeway, TX 78734"),
    ("Riverside Pediatrics", "2300 Riverside Dr, Austin, TX 78741"),
    ("Summit Dermatology Associates", "5 Summit Plaza, San Antonio, TX 78216"),
    ("Westgate Urgent Care", "4477 Westgate Blvd, Austin, TX 78745"),
]
NEW_PROVIDERS = [  # only in the drifted batch
    ("Northgate Imaging Partners", "18 Northgate Pkwy, Houston, TX 77060"),
    ("Sunrise Telehealth Group", "600 Congress Ave, Floor 14, Austin, TX 78701"),
]
CPT = [  # code, description, typical charge in cents
    ("99213", "Office visit, established patient", 13500),
    ("99214", "Office visit, established patient, moderate", 19500),
    ("99203", "Office visit, new patient", 17000),
    ("85025", "Complete blood count (CBC)", 3800),
    ("80053", "Comprehensive metabolic panel", 5200),
    ("36415", "Venipuncture", 1800),
    ("93000", "Electrocardiogram (ECG)", 8500),
    ("71046", "Chest X-ray, 2 views", 12000),
    ("81001", "Urinalysis", 2200),
    ("90471", "Immunization administration", 3500),
    ("97110", "Therapeutic exercise, 15 min", 6500),
    ("87880", "Rapid strep test", 3000),
]
CHARGES = np.array([cents for _, _, cents in CPT], dtype=np.float64)


def dimensions(rng: np.random.Generator, rows: int) -> dict:
    n = g.dimension_size(rows, per=10)
    first = rng.integers(0, len(FIRST_NAMES), n)
    last = rng.integers(0, len(LAST_NAMES), n)
    born = rng.integers(g.epoch_days(date(1935, 1, 1)), g.epoch_days(date(2005, 1, 1)), n)
    senior = born < g.epoch_days(date(1959, 1, 1))
    payer = np.where(senior & (rng.random(n) < 0.8), 0, g.draw(rng, [0.0, 0.15, 0.22, 0.25, 0.25, 0.13], n))
    names = [f"{FIRST_NAMES[f]} {LAST_NAMES[s]}" for f, s in zip(first, last, strict=True)]
    return {
        PATIENTS: {
            "patient_id": g.dimension_ids("PAT", n),
            "patient_name": np.array(names),
            "date_of_birth": born.astype(np.int32),
            "payer": np.array(PAYERS)[payer],
            "consent_training": rng.random(n) < CONSENT_RATE,
            "_email": np.array(
                [
                    f"{FIRST_NAMES[f].lower()}.{LAST_NAMES[s].lower()}{k}@{EMAIL_DOMAINS[k % 3]}"
                    for f, s, k in zip(first, last, rng.integers(1, 99, n), strict=True)
                ]
            ),
            "_phone": np.array(
                [
                    f"{AREA_CODES[a]}555{k:04d}"
                    for a, k in zip(rng.integers(0, 6, n), rng.integers(100, 200, n), strict=True)
                ]
            ),
            "_member_id": np.array(
                [f"{PAYER_CODES[p]}{k:08d}" for p, k in zip(payer, rng.integers(0, 10**8, n), strict=True)]
            ),
            "_mrn": np.array([f"{k:08d}" for k in rng.integers(0, 10**8, n)]),
            "_ssn": np.array(
                [f"9{a:02d}-{b:02d}-{c:04d}" for a, b, c in rng.integers((0, 1, 1), (99, 99, 9999), (n, 3))]
            ),
            "_has_ssn": rng.random(n) < 0.35,
        }
    }


def block(ctx: g.BlockContext) -> g.Block:
    rng, n, drifted = ctx.rng, ctx.n, ctx.drifted
    patients = ctx.dims[PATIENTS]
    weights = np.where(patients["payer"] == "Medicare", 3.0, 1.0) if drifted else np.ones(patients["payer"].shape[0])
    patient = rng.choice(weights.shape[0], size=n, p=weights / weights.sum())
    providers = PROVIDERS + NEW_PROVIDERS if drifted else PROVIDERS
    provider_weights = [1.0] * len(PROVIDERS) + [4.0] * (len(providers) - len(PROVIDERS))
    provider = g.draw(rng, provider_weights, n)
    received_at = ctx.timestamps_us()
    invoiced = received_at // g.US_PER_DAY - rng.integers(1, 30, n)
    count = rng.integers(2, 7, n) if drifted else rng.integers(1, 5, n)
    shuffled = np.argsort(rng.random((n, len(CPT))), axis=1)  # the first count[i] are row i's services
    charges = np.round(CHARGES * rng.uniform(0.9, 1.2, (n, len(CPT))) * (1.35 if drifted else 1.0)).astype(np.int64)
    phone_style, date_style, layout = (
        rng.integers(0, 3, n),
        rng.integers(0, len(g.DATE_STYLES), n),
        rng.integers(0, 3, n),
    )
    noisy = rng.random(n) < ctx.label_noise
    invoice_ids = [f"INV-{k:08d}" for k in rng.integers(0, 10**8, n).tolist()]

    texts, labels = [], []
    for i in range(n):
        codes = sorted(shuffled[i, : count[i]].tolist())
        cents = charges[i, codes].tolist()
        name, address = providers[provider[i]]
        truth = {
            "provider": name,
            "invoice_date": g.to_date(invoiced[i]).isoformat(),
            "total_amount": sum(cents) / 100,
            "cpt_codes": [CPT[c][0] for c in codes],
        }
        p = patient[i]
        lines = _patient_lines(patients, p, phone_style[i])
        text = _render(
            truth,
            invoice_ids[i],
            address,
            codes,
            cents,
            lines,
            patients["payer"][p],
            date_style[i],
            layout[i],
            provider[i] >= len(PROVIDERS),  # the new providers write decimal commas
        )
        texts.append(text)
        labels.append(_alter(rng, truth) if noisy[i] else truth)

    columns = {
        "item_ref": ctx.refs,
        "invoice_id": invoice_ids,
        "patient_id": patients["patient_id"][patient],
        "received_at": received_at,
        "invoice_text": texts,
    }

    def conflicts(rng: np.random.Generator, rows: np.ndarray) -> list[str]:
        return [json.dumps(_alter(rng, labels[i])) for i in rows]

    label_json = [json.dumps(label) for label in labels]
    consent = patients["consent_training"][patient]
    return g.Block(
        columns, g.label_batch(ctx, label_json, received_at, conflicts, noisy=noisy, training_allowed=consent)
    )


def _patient_lines(patients: dict, i: int, phone_style: int) -> list[str]:
    """The patient block: de-identified for consenting patients, full PHI for the others."""
    if patients["consent_training"][i]:
        return ["Patient: [REDACTED]"]
    phone = patients["_phone"][i]
    phone = [
        f"({phone[:3]}) {phone[3:6]}-{phone[6:]}",
        f"{phone[:3]}-{phone[3:6]}-{phone[6:]}",
        f"{phone[:3]}.{phone[3:6]}.{phone[6:]}",
    ][phone_style]
    dob = g.to_date(patients["date_of_birth"][i]).isoformat()
    lines = [
        f"Patient: {patients['patient_name'][i]}    DOB: {dob}",
        f"Member ID: {patients['_member_id'][i]}    MRN: {patients['_mrn'][i]}",
        f"Phone: {phone}    Email: {patients['_email'][i]}",
    ]
    if patients["_has_ssn"][i]:
        lines.append(f"SSN: {patients['_ssn'][i]}")
    return lines


def _money(cents: int, comma: bool = False) -> str:
    """Dollars as "$1,234.56", or as "$1.234,56" with a decimal comma."""
    text = f"{cents / 100:,.2f}"
    return "$" + (text.translate(str.maketrans(",.", ".,")) if comma else text)


def _render(
    truth: dict,
    number: str,
    address: str,
    codes: list,
    cents: list,
    patient_lines: list,
    payer: str,
    style: int,
    layout: int,
    comma: bool = False,
) -> str:
    money = partial(_money, comma=comma)
    invoice_date = g.format_date(date.fromisoformat(truth["invoice_date"]), style)
    total = sum(cents)
    if layout == 0:  # itemised statement
        items = [f"{CPT[c][0]}  {CPT[c][1]:<45}{money(a):>12}" for c, a in zip(codes, cents, strict=True)]
        share = f"\nPatient responsibility: {money(round(total * 0.2))}" if payer != "SelfPay" else ""
        return "\n".join(
            [
                truth["provider"].upper(),
                address,
                "STATEMENT OF SERVICES",
                f"Invoice no.: {number}",
                f"Invoice date: {invoice_date}",
                *patient_lines,
                f"Payer: {payer}",
                "",
                f"CPT    {'Description':<45}{'Amount':>12}",
                *items,
                f"Total charges: {money(total)}{share}",
            ]
        )
    if layout == 1:  # letter
        services = "; ".join(f"{CPT[c][1]} (CPT {CPT[c][0]}) {money(a)}" for c, a in zip(codes, cents, strict=True))
        return "\n".join(
            [
                truth["provider"],
                "Billing Department",
                "",
                f"Invoice {number}, dated {invoice_date}.",
                *patient_lines,
                f"Services rendered: {services}.",
                f"Total charges for this visit: {money(total)}.",
                "Please contact our billing department with any questions.",
            ]
        )
    return "\n".join(  # claim summary
        [
            "CLAIM SUMMARY",
            f"Provider: {truth['provider']}",
            f"Invoice date: {invoice_date}",
            *patient_lines,
            f"Payer: {payer}",
            f"Procedures: {', '.join(CPT[c][0] for c in codes)}",
            f"Charges: {' + '.join(money(a) for a in cents)}",
            f"Total: {money(total)}",
        ]
    )


def _alter(rng: np.random.Generator, label: dict) -> dict:
    """The label with one field wrong (still valid against the schema)."""
    out = dict(label, cpt_codes=list(label["cpt_codes"]))
    field = ["invoice_date", "total_amount", "cpt_codes"][rng.integers(3)]
    if field == "invoice_date":
        out["invoice_date"] = (
            date.fromisoformat(out["invoice_date"]) + timedelta(days=int(rng.integers(1, 10)))
        ).isoformat()
    elif field == "total_amount":
        out["total_amount"] = round(out["total_amount"] * float(rng.uniform(1.05, 1.3)), 2)
    elif len(out["cpt_codes"]) > 1:
        out["cpt_codes"] = out["cpt_codes"][:-1]
    else:
        out["cpt_codes"] = ["99213" if out["cpt_codes"][0] != "99213" else "99214"]
    return out
