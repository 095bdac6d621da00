"""The offline render as a command: stack files from anywhere, written graphs read back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import rendered
from tools.render import load_graph, write

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_bad_stack_file_from_anywhere_is_refused_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "Pulumi.candidate.yaml"
    bad.write_text((ROOT / "Pulumi.prod.yaml").read_text().replace(
        "paper-trading:paperTradingMode: true", "paper-trading:paperTradingMode: false"))
    out = tmp_path / "out"
    result = _run("-m", "tools.render", "--stack-file", str(bad), "--out", str(out))
    assert result.returncode == 1
    assert "paper-trading:paperTradingMode: must be true" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists(), "nothing may be written for a refused config"


def test_good_stack_file_renders_resources_and_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _run("-m", "tools.render", "--stack-file", str(ROOT / "Pulumi.dev.yaml"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    resources = json.loads((out / "resources.json").read_text())
    assert any(r["type"] == "docker:index/container:Container" for r in resources)
    assert (out / "files").is_dir()
    assert "secret:" not in (out / "resources.json").read_text(), "secrets must be masked in the render"


def test_written_graph_reads_back_for_the_policy_check(tmp_path: Path) -> None:
    graph = rendered("prod")
    write(graph, tmp_path)
    loaded = load_graph(tmp_path)
    assert [r.urn for r in loaded.resources] == [r.urn for r in graph.resources]
    assert loaded.outputs["activeColor"] == graph.outputs["activeColor"]
    clean = _run("-m", "policies.check", "--graph", str(tmp_path))
    assert clean.returncode == 0, clean.stdout + clean.stderr

    entries = json.loads((tmp_path / "resources.json").read_text())
    app = next(e for e in entries if any(
        lbl == {"label": "paper-trading.role", "value": "app"} for lbl in e["inputs"].get("labels", [])))
    app["inputs"]["envs"] = [e.replace("PAPER_TRADING_MODE=true", "PAPER_TRADING_MODE=false")
                             for e in app["inputs"]["envs"]]
    (tmp_path / "resources.json").write_text(json.dumps(entries))
    mutated = _run("-m", "policies.check", "--graph", str(tmp_path))
    assert mutated.returncode == 1
    assert "MANDATORY paper-trading-mode" in mutated.stdout
