"""The package layout holds: no import cycle anywhere, stages that depend on each other in one direction only, a
platform that knows no stage, stage logic free of Dagster, and every module importable in a fresh interpreter.

The import graph is read from the source (every `import`, lazy and TYPE_CHECKING ones too), so a cycle hidden in a
function body is a cycle here as well."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ontos_pipeline", "synthetic_data")
# the stages, each allowed to import only the stages before it (labels feed the training sheet, which the
# trainer reads; serving logs what monitoring reads; improving reads all of them)
STAGES = ("data", "label", "generate", "train", "deploy", "monitor", "improve")
DAGSTER_MODULES = ("assets", "sensors", "schedules")  # the modules of a stage that make Dagster definitions
WHEEL_ONLY = {"ontos_pipeline/schemas"}  # where a wheel puts schemas/ (pyproject.toml)
PLATFORM_MAY_IMPORT = ("ontos_pipeline.platform", "ontos_pipeline.specs", "ontos_pipeline.settings")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of ours it imports (a `from package import name` counts as the submodule)."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module for a in node.names
                ]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != module and not module.startswith(target + "."):
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    out.append(sorted(group))
    return out


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "ontos_pipeline" and len(parts) > 1 and parts[1] in STAGES else None


def test_the_cycle_finder_finds_a_cycle_through_a_lazy_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    assert len(graph) > 100 and graph["ontos_pipeline.definitions"]  # the graph is read, not empty
    assert cycles(graph) == []


def test_stages_depend_on_earlier_stages_only():
    graph = import_graph()
    wrong = sorted(
        f"{m} -> {d}"
        for m, deps in graph.items()
        for d in deps
        if stage_of(m) and stage_of(d) and STAGES.index(stage_of(d)) > STAGES.index(stage_of(m))
    )
    assert wrong == [], "\n".join(wrong)
    # what runs the stages: no stage reaches up to it
    above = (
        "ontos_pipeline.cli",
        "ontos_pipeline.demo",
        "ontos_pipeline.databricks",
        "ontos_pipeline.pipeline",
        "ontos_pipeline.definitions",
    )
    assert sorted(f"{m} -> {d}" for m, deps in graph.items() if stage_of(m) for d in deps if d.startswith(above)) == []


def test_the_platform_knows_no_stage_and_stage_logic_knows_no_dagster():
    graph, mods = import_graph(), modules()
    platform = sorted(
        f"{m} -> {d}"
        for m, deps in graph.items()
        if m.startswith("ontos_pipeline.platform")
        for d in deps
        if not d.startswith(PLATFORM_MAY_IMPORT)
    )
    assert platform == []
    dagster_in_logic = []
    for module, path in mods.items():
        if stage_of(module) is None or module.rsplit(".", 1)[-1] in DAGSTER_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            dagster_in_logic += [f"{module}: {n}" for n in names if n.split(".")[0].startswith("dagster")]
        dagster_in_logic += [
            f"{module} -> {d}"
            for d in graph[module]
            if d.split(".")[1] in ("steps", "resources", "metadata", "pipeline", "definitions")
        ]
    assert dagster_in_logic == []


def test_every_module_imports_in_a_fresh_interpreter_in_either_order():
    """Two fresh interpreters import every module, in opposite orders: no module needs another imported first."""
    names = sorted(m for m in modules() if not m.endswith("__main__") and m != "ontos_pipeline.definitions")
    for order in (names, names[::-1]):
        script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
        result = subprocess.run(
            [sys.executable, "-c", script, *order], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]


def test_docs_and_docstrings_name_modules_and_files_that_exist():
    """`ontos_pipeline.x.y` and `ontos_pipeline/x/y.py` in the README and in any source (docstrings, comments)
    name a module (or something in one) and a file that exist."""
    import re

    mods = modules()
    dotted = re.compile(r"\bontos_pipeline(?:\.[A-Za-z_]\w*)+")
    path = re.compile(r"\b(?:ontos_pipeline|ontos_pipeline_tests|bench|schemas|synthetic_data)/[\w/.-]*\w")
    sources = [
        ROOT / "README.md",
        ROOT / "bench" / "README.md",
        *(
            p
            for pkg in (*PACKAGES, "ontos_pipeline_tests", "bench")
            for p in (ROOT / pkg).rglob("*.py")
            if p != Path(__file__)
        ),
    ]
    wrong = []
    for source in sources:
        text = source.read_text(encoding="utf-8")
        for name in set(dotted.findall(text)):
            parts = name.split(".")
            if not parts[1].startswith("__") and not any(".".join(parts[:n]) in mods for n in range(len(parts), 1, -1)):
                wrong.append(f"{source.relative_to(ROOT)}: {name}")
        for found in set(path.findall(text)):
            if not (ROOT / found).exists() and not found.endswith("_") and found not in WHEEL_ONLY:
                wrong.append(f"{source.relative_to(ROOT)}: {found}")
    assert wrong == [], "\n".join(wrong)
