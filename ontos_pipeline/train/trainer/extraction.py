"""Extraction heads for object responses: one head per field of the response schema.

A span field (a date, a number, a string with a pattern, a list of such strings, a free string) finds candidate
spans in the item's text, normalises each (dates to ISO 8601, amounts to numbers) and learns which candidate
fills the field from the words around it (a ranker over candidates). Date and amount layouts are learned from the
training examples (`layouts`): a layout the built-in formats do not know (a drifted export's "14-MAR-2025") is read
once corrected examples of it are trained on. An enum field is a text classifier. A
field without any candidate falls back to its most frequent training value with confidence 0.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction import DictVectorizer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from ontos_pipeline.train.trainer.layouts import DateLayouts, NumberLayouts

DATE_FORMATS = ("%Y-%m-%d", "%d %B %Y", "%d %b %Y", "%B %d, %Y", "%b %d, %Y", "%m/%d/%Y", "%d.%m.%Y")
MIN_FEATURE_COUNT = 10  # boosting rankers use features seen on at least this many candidates
WORD = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]")


def parse_date(text: str) -> str | None:
    """ISO 8601 of a date written in one of DATE_FORMATS (slashes read month first, dots day first)."""
    text = text.replace(".", "") if re.fullmatch(r"\d{1,2} [A-Z][a-z]+\. \d{4}|[A-Z][a-z]+\. .*", text) else text
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class Candidate:
    value: object
    start: int
    end: int
    source: str


def _shape(text: str) -> str:
    return re.sub(r"(.)\1+", r"\1", re.sub(r"[a-z]", "a", re.sub(r"[A-Z]", "A", re.sub(r"\d", "9", text))))[:12]


def _token(word: str) -> str:
    return "0" if word.isdigit() else word.lower()


def context_features(text: str, cand: Candidate, rank: int, count: int, extra: Mapping[str, object]) -> dict:
    """Words around the span (same line), the line's first words, the span's shape and rank among candidates."""
    line_start = text.rfind("\n", 0, cand.start) + 1
    line_end = text.find("\n", cand.end)
    before = [_token(w) for w in WORD.findall(text[line_start : cand.start])]
    after = [_token(w) for w in WORD.findall(text[cand.end : None if line_end < 0 else line_end])]
    feats: dict[str, object] = {f"prev{i}={w}": 1 for i, w in enumerate(reversed(before[-3:]), 1)}
    feats.update({f"next{i}={w}": 1 for i, w in enumerate(after[:2], 1)})
    feats["line=" + " ".join(before[:2])] = 1
    feats["shape=" + _shape(text[cand.start : cand.end])] = 1
    feats[f"source={cand.source}"] = 1
    feats[f"rank={min(rank, 5)}"] = 1
    feats[f"rrank={min(count - 1 - rank, 5)}"] = 1
    feats["line_no"] = min(text.count("\n", 0, cand.start), 30) / 30
    feats["rel_pos"] = cand.start / max(len(text), 1)
    feats.update(extra)
    return feats


class SpanField:
    """A field filled from candidate spans of the text, chosen by a learned ranker."""

    def __init__(self, name: str, schema: Mapping, family: str, seed: int):
        self.name, self.family, self.seed = name, family, seed
        self.many = schema.get("type") == "array"
        item = schema.get("items", {}) if self.many else schema
        self.kind = (
            "date"
            if item.get("format") == "date"
            else "number"
            if item.get("type") in ("number", "integer")
            else "pattern"
            if item.get("pattern")
            else "string"
        )
        self.integer = item.get("type") == "integer"
        pattern = item.get("pattern", "").removeprefix("^").removesuffix("$")
        self.regex = re.compile(rf"(?<![A-Za-z0-9]){pattern}(?![A-Za-z0-9])") if pattern else None
        self.vocabulary: list[str] = []
        self.dates, self.numbers = DateLayouts(), NumberLayouts()
        self.fallback: object = None
        self.vectorizer = DictVectorizer()
        self.model = None

    def candidates(self, text: str) -> list[Candidate]:
        if self.kind == "date":
            found = [Candidate(*span) for span in self.dates.spans(text, parse_date)]
        elif self.kind == "number":
            found = [Candidate(*span) for span in self.numbers.spans(text)]
            if self.integer:
                found = [c for c in found if c.value is not None and float(c.value).is_integer()]
        elif self.kind == "pattern":
            found = [Candidate(m.group(), m.start(), m.end(), "pattern") for m in self.regex.finditer(text)]
        else:
            lowered = text.lower()
            found = [
                Candidate(v, m.start(), m.end(), "known")
                for v in self.vocabulary
                for m in re.finditer(re.escape(v.lower()), lowered)
            ]
            for m in re.finditer(r"[^\n]+", text):  # whole lines and what follows a "Label:" on a line
                line = m.group()
                found.append(Candidate(line.strip(), m.start(), m.end(), "line"))
                if ": " in line:
                    value = line.split(": ", 1)[1].strip()
                    found.append(Candidate(value, m.end() - len(line.split(": ", 1)[1]), m.end(), "after_colon"))
        return sorted((c for c in found if c.value not in (None, "")), key=lambda c: (c.start, c.source))

    def _rows(self, text: str) -> tuple[list[Candidate], list[dict]]:
        cands = self.candidates(text)
        numbers = [c.value for c in cands if isinstance(c.value, float)]
        counts = Counter(str(c.value) for c in cands)
        rows = []
        for rank, c in enumerate(cands):
            extra: dict[str, object] = {"repeats": min(counts[str(c.value)], 5) / 5}
            if numbers:
                extra["is_max"] = float(c.value == max(numbers))
                extra["is_min"] = float(c.value == min(numbers))
            rows.append(context_features(text, c, rank, len(cands), extra))
        return cands, rows

    def fit(self, texts: Sequence[str], truths: Sequence[object]) -> SpanField:
        values = [v for t in truths for v in (t if isinstance(t, list) else [t]) if v is not None]
        self.fallback = Counter(map(_key, values)).most_common(1)[0][0] if values else None
        self.fallback = next((v for v in values if _key(v) == self.fallback), None)
        if self.kind == "string":
            self.vocabulary = sorted({v for v in values if isinstance(v, str) and len(v) >= 2})
        wanted_values = [t if isinstance(t, list) else [t] for t in truths]
        if self.kind == "date":
            self.dates.fit(texts, wanted_values)
        elif self.kind == "number":
            self.numbers.fit(texts, wanted_values)
        feats, target = [], []
        for text, truth in zip(texts, truths, strict=True):
            wanted = {_key(v) for v in (truth if isinstance(truth, list) else [truth]) if v is not None}
            cands, rows = self._rows(text)
            feats += rows
            target += [_key(c.value) in wanted for c in cands]
        if not feats or len(set(target)) < 2:
            return self
        x = self.vectorizer.fit_transform(feats)
        if self.family == "boosting":  # trees on the frequent features only (dense input)
            self.keep = np.flatnonzero(np.asarray((x != 0).sum(axis=0)).ravel() >= MIN_FEATURE_COUNT)
            self.model = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.1, random_state=self.seed)
            self.model.fit(x[:, self.keep].toarray(), np.asarray(target))
        else:
            self.model = LogisticRegression(C=1.0, max_iter=2000).fit(x, np.asarray(target))
        return self

    def predict(self, texts: Sequence[str]) -> list[tuple[object, float]]:
        """(value, confidence) per text; all candidates are scored in one batch."""
        found = [self._rows(text) for text in texts]
        fallback = ([self.fallback] if self.many and self.fallback is not None else self.fallback), 0.0
        if self.model is None or not any(cands for cands, _ in found):
            return [fallback] * len(texts)
        x = self.vectorizer.transform([row for _, rows in found for row in rows])
        scores = self.model.predict_proba(x[:, self.keep].toarray() if self.family == "boosting" else x)[:, 1]
        out, start = [], 0
        for cands, _ in found:
            p, start = scores[start : start + len(cands)], start + len(cands)
            out.append(self._choose(cands, p) if cands else fallback)
        return out

    def _choose(self, cands: list[Candidate], p: np.ndarray) -> tuple[object, float]:
        best = int(np.argmax(p))
        if not self.many:
            return cands[best].value, float(p[best])
        chosen, seen = [], set()
        for c, pc in zip(cands, p, strict=True):
            if pc >= 0.5 and _key(c.value) not in seen:
                seen.add(_key(c.value))
                chosen.append((c.value, pc))
        chosen = chosen or [(cands[best].value, p[best])]
        return [v for v, _ in chosen], float(np.mean([pc for _, pc in chosen]))


class ChoiceField:
    """An enum field: a text classifier over the item's text."""

    def __init__(self, name: str, schema: Mapping, seed: int):
        self.name, self.values = name, list(schema["enum"])
        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
        self.model: LogisticRegression | None = None
        self.fallback: object = None

    def fit(self, texts: Sequence[str], truths: Sequence[object]) -> ChoiceField:
        pairs = [(t, v) for t, v in zip(texts, truths, strict=True) if v is not None]
        self.fallback = Counter(v for _, v in pairs).most_common(1)[0][0] if pairs else self.values[0]
        if len({v for _, v in pairs}) >= 2:
            x = self.vectorizer.fit_transform([t for t, _ in pairs])
            self.model = LogisticRegression(C=10.0, max_iter=2000).fit(x, [v for _, v in pairs])
        return self

    def predict(self, texts: Sequence[str]) -> list[tuple[object, float]]:
        if self.model is None:
            return [(self.fallback, 0.0)] * len(texts)
        p = self.model.predict_proba(self.vectorizer.transform(list(texts)))
        best = p.argmax(axis=1)
        return [(self.model.classes_[b], float(row[b])) for b, row in zip(best, p, strict=True)]


def _key(value: object) -> str:
    """Comparison key of a field value: numbers to cents, strings stripped."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return f"{float(value):.2f}"
    return str(value).strip()


class FieldExtractor:
    """One head per field of an object response schema."""

    def __init__(self, schema: Mapping, family: str, seed: int):
        self.properties = dict(schema.get("properties", {}))
        self.heads = {
            name: ChoiceField(name, prop, seed) if "enum" in prop else SpanField(name, prop, family, seed)
            for name, prop in self.properties.items()
        }

    def fit(self, texts: Sequence[str], responses: Sequence[Mapping]) -> FieldExtractor:
        for name, head in self.heads.items():
            head.fit(texts, [r.get(name) if isinstance(r, Mapping) else None for r in responses])
        return self

    def predict(self, texts: Sequence[str]) -> list[tuple[dict, float]]:
        by_field = {name: head.predict(texts) for name, head in self.heads.items()}
        out = []
        for i in range(len(texts)):
            fields = {name: values[i] for name, values in by_field.items()}
            response = {name: value for name, (value, _) in fields.items() if value is not None}
            out.append((response, float(np.mean([c for _, c in fields.values()])) if fields else 0.0))
        return out
