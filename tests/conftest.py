"""Shared fixtures. Tests never reach the network: the Hub is offline and caches are per session."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EMPATHIC_LORA_SHARED", ROOT.parent / "shared"))


if os.environ.get("PYTEST_XDIST_WORKER"):
    # The suite runs in one pytest-xdist worker per core (pyproject's addopts): a worker's own
    # threads would only compete with the other workers' and with their subprocesses'. Set before
    # torch is first imported, which reads it.
    os.environ["OMP_NUM_THREADS"] = "1"


def _shared(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """`name` in the directory all xdist workers of this run share (without xdist: the session's)."""
    base = tmp_path_factory.getbasetemp()
    directory = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    directory.mkdir(exist_ok=True)
    return directory


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache per test run, shared by its workers: downloads, tokenized data and the converted
    SmolLM2 are built once (the cache's writers stage and rename, so workers may race safely)."""
    cache = _shared(tmp_path_factory, "cache")
    os.environ["EMPATHIC_LORA_CACHE"] = str(cache)
    return cache


def _need(path: Path) -> Path:
    if not path.exists():
        message = f"{path} is missing: the real data and models from ../shared are needed (set EMPATHIC_LORA_SHARED)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)  # CI has ../shared: a missing copy is a failure, never a skip
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def ed_dir() -> Path:
    return _need(SHARED / "data" / "empatheticdialogues")


@pytest.fixture(scope="session")
def distilgpt2_dir() -> Path:
    return _need(SHARED / "models" / "distilgpt2-architecture")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    return _need(SHARED / "models" / "smollm2-135m-instruct-gguf")


@pytest.fixture(scope="session")
def browser():
    """A headless Debian chromium driven by Playwright (`web_harness.browser`), for the whole session."""
    import web_harness as harness

    if harness.chromium_path() is None:
        message = "chromium is missing (apt-get install chromium; .ci/run installs it)"
        pytest.fail(message) if os.environ.get("CI", "").lower() == "true" else pytest.skip(message)
    with harness.browser() as launched:
        yield launched


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `last.ckpt` of one short run of configs/tiny.yaml (offline tiny GPT-2), shared by the whole session.

    Six epochs: fewer leave the tiny model answering some messages with eos alone.
    """
    root = _shared(tmp_path_factory, "tiny")
    ckpt = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    with FileLock(root.with_suffix(".lock")):  # trained by the first worker that asks, once
        if not ckpt.is_file():
            result = run_python("train.py", "fit", "--config", "configs/tiny.yaml", "--trainer.max_epochs", "6",
                                "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root))
            assert result.returncode == 0, result.stderr[-3000:]
    return ckpt


@pytest.fixture(scope="session")
def smollm2_run(tmp_path_factory: pytest.TempPathFactory, ed_dir: Path, smollm2_dir: Path) -> Path:
    """The run root of one 2-step fit of configs/smollm2_cpu.yaml on the GGUF in ../shared and the
    real data, shared by the whole session (tests only read it)."""
    root = _shared(tmp_path_factory, "smollm2")
    ckpt = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    with FileLock(root.with_suffix(".lock")):  # trained by the first worker that asks, once
        if not ckpt.is_file():
            result = run_python(
                "train.py", "fit", "--config", "configs/smollm2_cpu.yaml", "--model.base_model", str(smollm2_dir),
                "--data.data_dir", str(ed_dir), "--data.max_examples", "16", "--data.max_length", "64",
                "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--model.num_generation_samples", "0",
                "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root),
            )
            assert result.returncode == 0, result.stderr[-3000:]
    return root


def run_python(*args: str, timeout: float = 600, input: str | bytes | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run `python ARGS` as a user would, from the project root, capturing both streams."""
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=not isinstance(input, bytes),
        timeout=timeout, input=input, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """A user mistake: non-zero exit, an `error:` line naming the culprit, no traceback."""
    stderr = result.stderr if isinstance(result.stderr, str) else result.stderr.decode()
    assert result.returncode != 0, stderr
    assert "Traceback" not in stderr, stderr
    assert "error" in stderr.lower(), stderr
    for needle in needles:
        assert needle in stderr, stderr


def run_main(main: Callable[[list[str]], Any], *args: str) -> subprocess.CompletedProcess:
    """Run a command's `main(argv)` in this process, as `run_python` runs it in another: its exit
    code and both streams. For checks of parsing and one-line errors, which need no fresh process
    (each costs seconds of imports)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.chdir(ROOT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    return subprocess.CompletedProcess(["main", *args], code, out.getvalue(), err.getvalue())
