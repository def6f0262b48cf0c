"""A run written by the code before the layout by job (tests/fixtures/run_before_layout, made at
commit fbea085) still loads, resumes, tests, chats, scores and exports: its checkpoint's
hyperparameters and its config.yaml's class paths (`empathic_lora.callbacks.*`,
`empathic_lora.metrics.*`) are the addresses the package keeps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_main

from empathic_lora.chat import repl
from empathic_lora.evaluate import compare_runs
from empathic_lora.export import exporter
from empathic_lora.lm import checkpoint_file
from empathic_lora.train import cli

FIXTURE = ROOT / "tests" / "fixtures" / "run_before_layout"
TINY = ["--config", "configs/tiny.yaml", "--trainer.enable_progress_bar", "false"]


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A copy: the committed files never change."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "run"))


def test_it_resumes_and_tests(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = run_main(cli.main, "fit", *TINY, "--trainer.max_steps", "5", "--ckpt_path", "last",
                      "--trainer.default_root_dir", str(run))
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = torch.load(run / "lightning_logs" / "version_2" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 5 and resumed["hyper_parameters"]["r"] == 2  # from step 3, its own adapter shape
    result = run_main(cli.main, "test", *TINY, "--ckpt_path", str(run / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"),
                      "--model.num_generation_samples", "0", "--trainer.default_root_dir", str(run))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run / "lightning_logs" / "version_3" / "results.json").read_text())["metrics"]["test/ppl"] > 1


def test_chat_answers_from_it(run: Path) -> None:
    result = run_main(repl.main, "--checkpoint", str(run), "--message", "I feel lonely today", "--max_new_tokens", "4",
                      "--crisis_semantic", "off")
    assert result.returncode == 0 and result.stdout.strip(), result.stderr[-3000:]


def test_the_scorer_reads_its_results_and_samples(run: Path) -> None:
    result = run_main(compare_runs.main, str(run), "--bootstrap", "20")
    assert result.returncode == 0, result.stderr[-3000:]
    header, row = result.stdout.splitlines()[:2]
    assert "ppl" in header.split() and row.split()[2] == "3"  # the test run's 3 generated replies


def test_it_exports(run: Path, tmp_path: Path) -> None:
    result = run_main(exporter.main, "--checkpoint", str(run), "--out", str(tmp_path / "adapter"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert checkpoint_file.read_export_meta(tmp_path / "adapter")["kind"] == "adapter"
