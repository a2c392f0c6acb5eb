"""The CLI: the documented commands, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qwenfleet.cli import PLAN_KEYS, main

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qwenfleet.cli", *args], capture_output=True, text=True, check=False)


def test_plan_json_has_the_stable_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "Qwen3-235B-A22B", "--gpu", "H100-80GB", "-o", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out)[: len(PLAN_KEYS)] == list(PLAN_KEYS)
    assert (out["gpusPerReplica"], out["tensorParallelSize"]) == (8, 8)
    assert main(["plan", "Qwen3-235B-A22B", "--gpu", "H100-80GB", "--precision", "fp8", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["gpusPerReplica"] == 4


@pytest.mark.parametrize(
    "args",
    [
        ("plan", "Qwen3-235B-A22B", "--gpu", "H100-80GB", "--precision", "awq"),
        ("plan", "Qwen3-0.6B", "--gpu", "L4-24GB", "--max-model-len", "131072"),
        ("plan", "Qwen3-9B", "--gpu", "L4-24GB"),
        ("plan", "Qwen3-8B", "--gpu", "T4"),
        ("plan", "Qwen3-8B", "--gpu", "L4-24GB", "--precision", "int2"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: tuple[str, ...]) -> None:
    result = _run(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("qwenfleet plan: ")


def test_plan_yaml_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "Qwen3-8B", "--gpu", "L4-24GB", "-o", "yaml"]) == 0
    assert "tensorParallelSize:" in capsys.readouterr().out
    assert main(["plan", "Qwen3-8B", "--gpu", "L4-24GB"]) == 0
    assert "Qwen3-8B on L4-24GB" in capsys.readouterr().out


def test_catalog(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalog", "models"]) == 0
    assert "Qwen3-235B-A22B-Thinking-2507" in capsys.readouterr().out
    assert main(["catalog", "gpus"]) == 0
    assert "MI300X-192GB" in capsys.readouterr().out


def test_crds_reproduce_the_committed_files(tmp_path: Path) -> None:
    assert main(["crds", "--out", str(tmp_path)]) == 0
    generated = sorted(tmp_path.glob("*.yaml"))
    assert [p.name for p in generated] == ["qwen3deployments.qwenfleet.dev.yaml", "qwen3routers.qwenfleet.dev.yaml"]
    for place in (ROOT / "crds", ROOT / "charts" / "qwenfleet" / "crds"):  # the chart ships the same bytes
        for fresh in generated:
            assert (place / fresh.name).read_bytes() == fresh.read_bytes(), f"{place / fresh.name} drifted: make crds"


def test_generated_docs_match_the_committed_pages(tmp_path: Path) -> None:
    assert main(["docs", "--out", str(tmp_path)]) == 0
    for fresh in tmp_path.glob("*.md"):
        assert (ROOT / "docs" / fresh.name).read_text() == fresh.read_text(), f"docs/{fresh.name} drifted: make docs"
