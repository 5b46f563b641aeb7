"""Relocatable state: image cells, prompts and logs name files relative to the home's files folder, so a copied
`ONTOS_HOME` keeps working (its own file: it runs beside test_byod's CSV loop on the other worker)."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

from ontos_pipeline.cli import main
from ontos_pipeline_tests.test_byod import png, rows


def test_an_image_folder_use_case_keeps_relative_cells_so_a_moved_home_serves_and_rebuilds(
    tmp_path, monkeypatch, capsys
):
    """Image cells, prompts and the inference log name files relative to the home's files folder: after `cp -a` of
    the home elsewhere (the old one deleted) the sheet's images are found, the server answers for a kept image
    named by its cell and the training data rebuilds byte-identically (the export
    embeds every image); test_byod's CSV loop retrains in a moved home."""
    import socket

    import requests

    from ontos_pipeline.deploy.serving.logbook import INFERENCE_LOG
    from ontos_pipeline.deploy.serving.server import BackgroundServer, ServingOptions
    from ontos_pipeline.platform.model_store import CHAMPION
    from ontos_pipeline.settings import load_settings

    home, use_cases, folder = tmp_path / "home", tmp_path / "use_cases", tmp_path / "leaves"
    monkeypatch.setenv("ONTOS_HOME", str(home))
    monkeypatch.setenv("ONTOS_USE_CASES_DIR", str(use_cases))
    for label, base in (("healthy", (30, 170, 40)), ("rust", (160, 80, 20))):
        (folder / label).mkdir(parents=True)
        for i in range(24):
            shade = tuple(min(255, c + 3 * i) for c in base)
            (folder / label / f"{i}.png").write_bytes(png(shade, size=8))
    assert main(["data", "load", str(folder), "--table", "raw.leaves"]) == 0
    assert main(["use-case", "init", "leaves", "--table", "raw.leaves", "--label-column", "label"]) == 0
    assert re.search(r"file +metadata +spells out the label", capsys.readouterr().out)  # rust/3.png: no input
    assert "image: {{ image }}" in (use_cases / "leaves.yaml").read_text()
    assert main(["run", "leaves"]) == 0
    assert "full_pipeline leaves: ok" in capsys.readouterr().out

    moved = tmp_path / "elsewhere" / "home"
    shutil.copytree(home, moved, symlinks=True)
    shutil.rmtree(home)
    monkeypatch.setenv("ONTOS_HOME", str(moved))
    settings = load_settings()
    lakehouse = settings.local_lakehouse()
    cells = [r["image"] for r in rows(lakehouse, "raw.leaves")]
    assert all(not Path(c).is_absolute() and (moved / "files" / c).is_file() for c in cells)
    prompts = [r["messages"] for r in lakehouse.records("qa_pairs", columns=["messages"])]
    assert len(prompts) == 48 and all(str(tmp_path) not in p and "images/ontos.raw.leaves/" in p for p in prompts)

    store = settings.local_model_store()
    champion = store.client().get_model_version_by_alias(store.model_name("leaves"), CHAMPION)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rust = {"item_ref": "new-1", "image": cells[-1]}  # a stored image, named by its relative cell
    inline = {"item_ref": "new-2", "image": base64.b64encode(png((160, 80, 20), size=8)).decode()}
    capsys.readouterr()
    assert main(["token", "create", "relocator", "--scopes", "invoke"]) == 0  # a named token, made by the CLI
    auth = {"Authorization": f"Bearer {capsys.readouterr().out.strip()}"}
    with BackgroundServer(settings, ServingOptions(port=port)) as server:
        answer = requests.post(
            f"{server.url}/serving-endpoints/leaves/invocations",
            json={"inputs": [rust, inline]},
            headers=auth,
            timeout=30,
        )
    assert answer.status_code == 200, answer.text
    assert [p["response"] for p in answer.json()["predictions"]] == ["rust", "rust"]
    logged = [r for r in lakehouse.records(INFERENCE_LOG) if r["status_code"] == 200]
    kept = json.loads(logged[-1]["inputs"])[1]["image"]
    assert logged[-1]["caller"] == "relocator"
    assert kept.startswith("serving_images/leaves/") and (moved / "files" / kept).is_file()

    capsys.readouterr()
    assert main(["rebuild-training-data", "--run-id", champion.run_id, "--out", str(tmp_path / "rebuilt")]) == 0
    assert "byte-identical" in capsys.readouterr().out
