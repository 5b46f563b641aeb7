"""GENERATE stage: a use case's prompt template -> validated, versioned, sandboxed renderer of sheet rows.

Prompts are Jinja2 rendered in the immutable sandbox with strict undefined variables; row values are data
passed to the template, never compiled, so a value such as "{{ 7*7 }}" renders literally. Plain functions, no
Dagster.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from jinja2 import StrictUndefined, Template, meta, nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ontos_pipeline.platform import tables
from ontos_pipeline.platform.lakehouse import Lakehouse
from ontos_pipeline.platform.versions import latest_published, publish_version
from ontos_pipeline.specs import UseCaseSpec

TABLE = tables.TEMPLATES
PARTS = ("system_prompt", "prompt")
NULL_TEXT = "n/a"
PLACEHOLDERS: dict[str, Any] = {
    "string": "x",
    "integer": 1,
    "double": 1.0,
    "boolean": True,
    "date": date(2024, 1, 1),
    "timestamp": datetime(2024, 1, 1, tzinfo=UTC),
}


class TemplateError(ValueError):
    """A template cannot compile or render. `str()` reads `template 'name' (spec path) part line N: problem`."""

    def __init__(self, template: str, path: Path | str | None, part: str | None, line: int | None, problem: str):
        self.template, self.path, self.part, self.line, self.problem = template, path, part, line, problem
        where = f"template {template!r}" + (f" ({path})" if path else "") + (f" {part}" if part else "")
        super().__init__(f"{where}{f' line {line}' if line else ''}: {problem}")

    def __reduce__(self):
        return TemplateError, (self.template, self.path, self.part, self.line, self.problem)


def finalize_value(value: object) -> object:
    """What `{{ expr }}` prints: missing values (None, NaN, NaT, pandas NA) read `n/a`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NULL_TEXT
    if type(value).__name__ in ("NaTType", "NAType"):  # pandas missing values, without importing pandas
        return NULL_TEXT
    if isinstance(value, datetime):  # one spelling whatever read the row (Spark, pandas, JSON): UTC, seconds
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(sep=" ", timespec="seconds")
    return value


MAX_LOOP_STEPS = 100_000  # loop iterations of one render, all loops together
MAX_RENDERED_CHARS = 1_000_000  # characters one render may produce
_COUNTED = "__ontos_counted"  # a global no template can name (private names are refused)
_budget = threading.local()


def _counted(iterable: object):
    """A template loop's iterable, counted against the render's step budget (nested loops multiply)."""
    for item in iterable:  # type: ignore[attr-defined]
        _budget.steps = getattr(_budget, "steps", MAX_LOOP_STEPS) - 1
        if _budget.steps < 0:
            raise SecurityError(f"the template loops more than {MAX_LOOP_STEPS:,} times in one render")
        yield item


class _LimitedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus limits on what one render may cost: loop steps, string/list repetition and
    powers (`'x' * 10**10` would take the memory of the process; the sandbox alone computes it)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > MAX_RENDERED_CHARS:
                    raise SecurityError(f"a repetition of {len(seq)} x {n} exceeds {MAX_RENDERED_CHARS:,} items")
        big_power = isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0
        if operator == "**" and big_power and right * math.log2(abs(left)) > 4096:
            raise SecurityError(f"{left} ** {right} is too large a number")
        return super().call_binop(context, operator, left, right)

    def _parse(self, source, name, filename):
        tree = super()._parse(source, name, filename)
        for loop in list(tree.find_all(nodes.For)):
            counted = nodes.Call(nodes.Name(_COUNTED, "load"), [loop.iter], [], None, None)
            loop.iter = counted.set_lineno(loop.lineno).set_environment(self)
        return tree


_ENV = _LimitedSandbox(undefined=StrictUndefined, autoescape=False, finalize=finalize_value)
_ENV.globals[_COUNTED] = _counted


_RENDERERS: dict[str, Renderer] = {}  # content version -> its compiled renderer
_RENDERERS_LOCK = threading.Lock()


@dataclass(frozen=True)
class CompiledTemplate:
    """A validated template of one use case; plain data (pickles), content-versioned."""

    name: str
    use_case: str
    version: str
    label_type: str
    system_prompt: str
    prompt: str
    response_schema: dict
    variables: dict[str, str]  # every template variable -> sheet column (resolved)

    def renderer(self) -> Renderer:
        """The compiled Jinja sources (a few ms to compile; kept per process by content version, so a served model
        does not recompile them on every request)."""
        with _RENDERERS_LOCK:
            found = _RENDERERS.get(self.version)
            if found is None or found.compiled != self:  # a hand-made template may reuse a version string
                found = _RENDERERS[self.version] = Renderer(self)
                while len(_RENDERERS) > 64:
                    _RENDERERS.pop(next(iter(_RENDERERS)))
            return found


class Renderer:
    """Renders sheet rows with a compiled template. Pickles as its `CompiledTemplate` (recompiled on load)."""

    def __init__(self, compiled: CompiledTemplate, path: Path | str | None = None):
        self.compiled, self._path = compiled, path
        self._templates = {part: _load(compiled.name, path, part, getattr(compiled, part))[1] for part in PARTS}
        self._variables = tuple(compiled.variables.items())

    def __reduce__(self):
        return Renderer, (self.compiled, self._path)

    def render(self, row: Mapping[str, object]) -> tuple[str, str]:
        """(system, user) text for one sheet row (a mapping of sheet column -> value)."""
        context = {}
        for var, column in self._variables:
            try:
                context[var] = row[column]
            except KeyError:
                raise TemplateError(
                    self.compiled.name,
                    self._path,
                    None,
                    None,
                    f"the row has no column {column!r} (template variable {var!r}); pass a full sheet row",
                ) from None
        return self._render("system_prompt", context, row), self._render("prompt", context, row)

    def messages(self, row: Mapping[str, object]) -> list[dict]:
        """Chat messages for one sheet row: system then user."""
        system, user = self.render(row)
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def _render(self, part: str, context: dict[str, object], row: Mapping[str, object] | None) -> str:
        _budget.steps = MAX_LOOP_STEPS
        try:
            chunks, size = [], 0
            for chunk in self._templates[part].generate(context):
                size += len(chunk)
                if size > MAX_RENDERED_CHARS:
                    raise SecurityError(f"the template renders more than {MAX_RENDERED_CHARS:,} characters")
                chunks.append(chunk)
            return "".join(chunks)
        except Exception as exc:
            where = (
                "on a sample row of typed placeholder values"
                if row is None
                else f"on row item_ref={row['item_ref']!r}"
                if "item_ref" in row
                else "on a row"
            )
            line, text = _template_line(exc.__traceback__, f"<{part}>"), str(exc).rstrip(".")
            if isinstance(exc, SecurityError):
                problem = f"blocked by the sandbox {where}: {text}; templates may only read the row's values"
            elif isinstance(exc, UndefinedError):
                problem = f"{text} {where}; use only the row's columns and attributes that exist"
            else:
                problem = f"fails {where}: {type(exc).__name__}: {text}"
            raise TemplateError(self.compiled.name, self._path, part, line, problem) from None


def compile_template(spec: UseCaseSpec, sheet_columns: Sequence[str] | None = None) -> CompiledTemplate:
    """Validate the use case's template against the sheet columns and return it compiled and versioned.

    Fails with a `TemplateError` (template, spec file, part, line) on syntax errors, private (`_`) attribute or
    item access, variables that map to no sheet column, and anything a sample row of typed placeholder values
    cannot render (sandbox violations, undefined attributes, type errors).
    """
    t = spec.template
    columns = [c.name for c in spec.sheet.columns] if sheet_columns is None else list(sheet_columns)
    variables: dict[str, str] = {}
    for part in PARTS:
        ast, _ = _load(t.name, spec.path, part, getattr(t, part))
        used = meta.find_undeclared_variables(ast) | {  # globals (range, dict...) shadowed by a sheet column
            n.name
            for n in ast.find_all(nodes.Name)
            if n.ctx == "load" and n.name in _ENV.globals and (n.name in t.variables or n.name in columns)
        }
        for var in sorted(used):
            column = t.variables.get(var, var)
            if column not in columns:
                mapped = f"is mapped to column {column!r}" if var in t.variables else "names no sheet column"
                raise TemplateError(
                    t.name,
                    spec.path,
                    part,
                    _name_line(ast, var),
                    f"variable {var!r} {mapped}: the sheet has no column {column!r} (sheet columns: "
                    f"{', '.join(columns)}); use a sheet column or map the variable to one under "
                    "template.variables",
                )
            variables[var] = column
    variables = dict(sorted(variables.items()))
    schema = json.loads(json.dumps(t.response_schema))
    version = _version(t.name, t.system_prompt, t.prompt, schema, variables, spec.labels.label_type)
    compiled = CompiledTemplate(
        t.name, spec.name, version, spec.labels.label_type, t.system_prompt, t.prompt, schema, variables
    )
    types = {c.name: c.type for c in spec.sheet.columns}
    sample = {var: PLACEHOLDERS[types.get(column, "string")] for var, column in variables.items()}
    renderer = Renderer(compiled, spec.path)
    for part in PARTS:
        renderer._render(part, sample, None)
    return compiled


def register_template(lakehouse: Lakehouse, compiled: CompiledTemplate, run_id: str | None = None) -> bool:
    """Publish `compiled` in the `templates` table; True if this version is new.

    Other published rows of the same template id or use case are archived. Registering the published version
    again writes nothing; registering an archived version publishes it again (keeping its first `created_at`).
    """
    row = {
        "template_id": compiled.name,
        "use_case": compiled.use_case,
        "version": compiled.version,
        "label_type": compiled.label_type,
        "system_prompt": compiled.system_prompt,
        "prompt": compiled.prompt,
        "response_schema": json.dumps(compiled.response_schema, sort_keys=True),
        "variables": json.dumps(compiled.variables, sort_keys=True),
        "created_at": datetime.now(UTC),
        "dagster_run_id": run_id,
    }
    return publish_version(
        lakehouse,
        TABLE,
        row,
        keys=["template_id", "version"],
        scope=lambda r: r["template_id"] == compiled.name or r["use_case"] == compiled.use_case,
    )


def current_template(lakehouse: Lakehouse, use_case: str) -> CompiledTemplate | None:
    """The published template of a use case, or None if none was registered."""
    row = latest_published(lakehouse, TABLE, {"use_case": use_case})
    if row is None:
        return None
    return CompiledTemplate(
        row["template_id"],
        row["use_case"],
        row["version"],
        row["label_type"],
        row["system_prompt"] or "",
        row["prompt"],
        json.loads(row["response_schema"]),
        json.loads(row["variables"] or "{}"),
    )


# ----------------------------------------------------------------------------------------------------------------
def _load(name: str, path: Path | str | None, part: str, source: str) -> tuple[nodes.Template, Template]:
    """Parse, reject private access statically, compile with filename `<part>` (traceback lines map to it)."""
    try:
        ast = _ENV.parse(source)
        for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):  # before compiling (const folding)
            if attr := _private_name(node):
                raise TemplateError(
                    name,
                    path,
                    part,
                    node.lineno,
                    f"access to {attr!r} is not allowed: names starting with '_' are Python "
                    "internals that templates cannot reach; use the row's values and Jinja filters",
                )
        code = _ENV.compile(source, filename=f"<{part}>")
    except TemplateSyntaxError as exc:
        problem = (exc.message or "invalid template").rstrip(".")
        raise TemplateError(name, path, part, exc.lineno, f"syntax error: {problem}; fix the Jinja2 syntax") from None
    return ast, _ENV.template_class.from_code(_ENV, code, _ENV.make_globals(None), None)


def _private_name(node: nodes.Node) -> str | None:
    """The private name that `x._a`, `x['_a']` or `x|attr('_a')` accesses, else None."""
    if isinstance(node, nodes.Getattr):
        key = node.attr
    elif isinstance(node, nodes.Getitem):
        key = node.arg.value if isinstance(node.arg, nodes.Const) else None
    elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args:
        key = node.args[0].value if isinstance(node.args[0], nodes.Const) else None
    else:
        key = None
    return key if isinstance(key, str) and key.startswith("_") else None


def _name_line(ast: nodes.Template, name: str) -> int | None:
    return next((n.lineno for n in ast.find_all(nodes.Name) if n.name == name and n.ctx == "load"), None)


def _template_line(tb: TracebackType | None, filename: str) -> int | None:
    """The template line of the innermost traceback frame Jinja mapped to `filename`."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _version(
    name: str, system_prompt: str, prompt: str, response_schema: dict, variables: dict[str, str], label_type: str
) -> str:
    payload = json.dumps(
        [name, system_prompt, prompt, response_schema, variables, label_type],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:20]
