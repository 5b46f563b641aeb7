"""Project hygiene that CI must enforce: ruff is clean and the code is `ruff format`ted, and CI runs exactly the
README's test command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_applied():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_the_readme_test_command():
    extracted = subprocess.run(
        ["awk", "/<!-- test-command -->/{getline; getline; print; exit}", "README.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    readme = (ROOT / "README.md").read_text()
    assert extracted == "python3 -m pip install uv && python3 -m uv run pytest"
    assert f"```bash\n{extracted}\n```" in readme
    assert "<!-- test-command -->" in (ROOT / ".ci" / "run").read_text()


def test_cli_reports_spec_errors_without_a_traceback(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: bad\nsheet: {}\n")
    result = subprocess.run(
        [sys.executable, "-m", "ontos_pipeline.cli", "specs", str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'bad.yaml'}: sheet.sources: is required (a mapping)"
