"""The reference recipe's training semantics: gradient clipping as the notebook's Trainer, one seed for
weights, dropout and data order, and evaluation in the conversation format the checkpoint was trained with."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import yaml
from conftest import run_python

from empathic_lora.data.datamodule import EmpatheticDialoguesDataModule
from empathic_lora.lm import pretrained
from empathic_lora.lm.builtin_models import TINY_GPT2

ROOT = Path(__file__).resolve().parents[2]


def test_the_recipe_clips_gradients_like_the_hugging_face_trainer() -> None:
    recipe = yaml.safe_load((ROOT / "configs" / "distilgpt2_t4.yaml").read_text())
    # TrainingArguments.max_grad_norm defaults to 1.0, applied to the global L2 norm.
    assert recipe["trainer"]["gradient_clip_val"] == 1.0
    assert recipe["trainer"].get("gradient_clip_algorithm", "norm") == "norm"


def test_every_config_says_how_it_clips() -> None:
    for config in sorted((ROOT / "configs").glob("*.yaml")):
        trainer = yaml.safe_load(config.read_text())["trainer"]
        assert "gradient_clip_val" in trainer, config.name
        line = next(line for line in config.read_text().splitlines() if "gradient_clip_val" in line)
        assert "#" in line, f"{config.name}: say why the value is what it is"


def _train_order(seed_everything: int, data_seed: int | None = None) -> list[int]:
    L.seed_everything(seed_everything)
    data = EmpatheticDialoguesDataModule(data_dir="builtin:sample", max_length=64, batch_size=4, seed=data_seed,
                                         tokenizer=pretrained.load_tokenizer(TINY_GPT2))
    data.setup("fit")
    return list(data.train_dataloader().sampler)


def test_seed_everything_drives_the_data_order_unless_data_seed_is_set() -> None:
    assert _train_order(1) == _train_order(1)
    assert _train_order(1) != _train_order(2)
    assert _train_order(1, data_seed=7) == _train_order(2, data_seed=7)


@pytest.fixture(scope="module")
def tiny_run_with_two_turns(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("two_turns")
    result = run_python("train.py", "fit", "--config", "configs/tiny.yaml", "--trainer.max_steps", "2",
                        "--data.history_turns", "2", "--data.max_length", "96", "--trainer.enable_progress_bar", "false",
                        "--trainer.default_root_dir", str(root))
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"


def _evaluated_with(root: Path) -> dict:
    config = yaml.safe_load(next(root.glob("lightning_logs/version_*/config.yaml")).read_text())
    return {key: config["data"][key] for key in ("format", "history_turns", "max_length")}


def test_evaluation_uses_the_checkpoints_format_unless_a_flag_is_typed(tmp_path: Path, tiny_run_with_two_turns: Path) -> None:
    common = ["--config", "configs/tiny.yaml", "--ckpt_path", str(tiny_run_with_two_turns),
              "--model.num_generation_samples", "0", "--trainer.limit_test_batches", "1", "--trainer.enable_progress_bar", "false"]
    # configs/tiny.yaml says history_turns 4 and max_length 128; the checkpoint recorded 2 and 96.
    quiet = run_python("train.py", "test", *common, "--trainer.default_root_dir", str(tmp_path / "a"))
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert _evaluated_with(tmp_path / "a") == {"format": "dialogue", "history_turns": 2, "max_length": 96}

    typed = run_python("train.py", "test", *common, "--data.history_turns", "3", "--trainer.default_root_dir", str(tmp_path / "b"))
    assert typed.returncode == 0, typed.stderr[-3000:]
    assert _evaluated_with(tmp_path / "b") == {"format": "dialogue", "history_turns": 3, "max_length": 96}
    notes = [line for line in typed.stderr.splitlines() if "--data.history_turns 3" in line]
    assert len(notes) == 1 and "trained with 2" in notes[0], typed.stderr[-2000:]
