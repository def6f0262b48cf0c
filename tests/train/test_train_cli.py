"""End-to-end training through the CLI on the real data and the distilgpt2 architecture."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml
from conftest import assert_one_line_error, run_main, run_python

from empathic_lora.errors import UserError
from empathic_lora.train.cli import main
from empathic_lora.train.lora_module import EmpatheticLoRAModule


def _fit(root: Path, ed_dir: Path, model_dir: Path, *extra: str) -> Path:
    main([
        "fit", "--config", "configs/distilgpt2_t4.yaml",
        "--model.base_model", str(model_dir), "--model.random_init", "true",
        "--data.data_dir", str(ed_dir), "--data.max_examples", "160", "--data.max_length", "128",
        "--trainer.accelerator", "cpu", "--trainer.precision", "32-true", "--trainer.limit_val_batches", "2",
        "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(root), *extra,
    ])
    return root / "lightning_logs"


def _metrics(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_fit_on_real_data_then_resume(tmp_path: Path, ed_dir: Path, distilgpt2_dir: Path) -> None:
    runs = _fit(tmp_path, ed_dir, distilgpt2_dir, "--trainer.max_steps", "3")
    last = runs / "version_0" / "checkpoints" / "last.ckpt"
    assert last.stat().st_size <= 5 * 2**20
    checkpoint = torch.load(last, weights_only=True)
    assert sum(t.numel() for t in checkpoint["state_dict"].values()) == 147_456  # LoRA only
    assert checkpoint["global_step"] == 3
    assert any(row["val/ppl"] for row in _metrics(runs / "version_0"))

    _fit(tmp_path, ed_dir, distilgpt2_dir, "--trainer.max_steps", "6", "--ckpt_path", str(last))
    resumed = runs / "version_1"  # a new, versioned run: the first one is untouched
    assert torch.load(last, weights_only=True)["global_step"] == 3
    final = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == 6
    assert final["optimizer_states"][0]["state"][0]["step"].item() == 6  # Adam state carried over
    steps = [int(row["step"]) for row in _metrics(resumed) if row["train/loss"]]
    assert min(steps) >= 3


def test_random_init_base_is_rebuilt_identically(distilgpt2_dir: Path) -> None:
    a = EmpatheticLoRAModule(str(distilgpt2_dir), random_init=True, init_seed=7)
    b = EmpatheticLoRAModule(str(distilgpt2_dir), random_init=True, init_seed=7)
    for (name, x), y in zip(a.model.named_parameters(), b.model.parameters()):
        if "lora_B" not in name:  # lora_A is drawn from the global RNG, lora_B starts at zero
            assert torch.equal(x, y) or "lora_A" in name, name
    assert a.base_signature == b.base_signature
    other = EmpatheticLoRAModule(str(distilgpt2_dir), random_init=True, init_seed=8)
    with pytest.raises(UserError, match="weights differ"):
        other.on_load_checkpoint({
            "hyper_parameters": dict(a.hparams), "state_dict": {},
            "empathic_lora": {"signature": a.base_signature},
        })


def test_base_model_swap_to_smollm2_gguf(smollm2_run: Path) -> None:
    checkpoint = torch.load(smollm2_run / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2
    targets = {key.split(".")[-4] for key in checkpoint["state_dict"]}
    assert targets == {"q_proj", "v_proj"}  # chosen for the Llama architecture automatically


def test_print_config_shows_the_reference_recipe() -> None:
    result = run_main(main, "fit", "--config", "configs/distilgpt2_t4.yaml", "--print_config")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    model, data, trainer = config["model"], config["data"], config["trainer"]
    assert (model["base_model"], model["r"], model["alpha"], model["dropout"], model["bias"]) == (
        "distilgpt2", 8, 32, 0.05, "none")
    assert model["target_modules"] == ["c_attn"] and model["lr"] == 3e-4
    assert (data["batch_size"], data["eval_batch_size"]) == (8, 8)
    assert (trainer["precision"], trainer["max_epochs"]) == ("16-mixed", 2)
    checkpointing = trainer["callbacks"][0]["init_args"]
    assert (checkpointing["monitor"], checkpointing["save_last"]) == ("val/ppl", True)


def test_offline_hub_model_gives_one_line_naming_the_flag(tmp_path: Path) -> None:
    result = run_main(main, "fit", "--config", "configs/distilgpt2_t4.yaml", "--trainer.default_root_dir", str(tmp_path))
    assert_one_line_error(result, "'distilgpt2'", "--model.base_model")


def test_offline_dataset_download_names_the_flag(tmp_path: Path) -> None:
    result = run_main(main, "fit", "--config", "configs/tiny.yaml", "--data.data_dir", "null",
                        "--data.download_url", "http://127.0.0.1:9/ed.tar.gz", "--data.cache_dir", str(tmp_path),
                        "--trainer.default_root_dir", str(tmp_path))
    assert_one_line_error(result, "could not download", "--data.data_dir")


def test_tiny_config_runs_end_to_end(tmp_path: Path) -> None:
    result = run_python("train.py", "fit", "--config", "configs/tiny.yaml", "--trainer.max_epochs", "3",
                        "--trainer.default_root_dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "lightning_logs" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "config.yaml").is_file()
    assert any(row["val/ppl"] for row in _metrics(run))


def test_typed_base_model_flag_wins_over_the_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A local copy of the training base, typed on the command line, replaces the recorded path."""
    import shutil

    from empathic_lora.lm.builtin_models import tiny_gpt2_dir

    original = tmp_path / "base-at-training"
    shutil.copytree(tiny_gpt2_dir(), original)
    common = ["--config", "configs/tiny.yaml", "--trainer.enable_progress_bar", "false",
              "--trainer.default_root_dir", str(tmp_path / "runs")]
    main(["fit", *common, "--model.base_model", str(original), "--trainer.max_steps", "2"])
    last = tmp_path / "runs/lightning_logs/version_0/checkpoints/last.ckpt"
    moved = original.rename(tmp_path / "local-copy")

    with pytest.raises(SystemExit):  # left alone, the recorded (now missing) path is used
        main(["validate", *common, "--ckpt_path", str(last)])
    assert f"--model.base_model {original} is not a directory" in capsys.readouterr().err

    main(["validate", *common, "--ckpt_path", str(last), "--model.base_model", str(moved)])
    assert "val/ppl" in capsys.readouterr().out


def test_the_empathy_measures_layer_appends_to_the_default_reply_metrics() -> None:
    result = run_main(main, "test", "--config", "configs/tiny.yaml", "--config", "configs/measures/empathy.yaml", "--print_config")
    assert result.returncode == 0, result.stderr
    metrics = yaml.safe_load(result.stdout)["model"]["generation_metrics"]
    names = [metric.get("name") for metric in metrics]
    assert names[-2:] == ["emoacc", "generic_rate"] and "bleu4" in names and "distinct2_field" in names


def test_replies_are_kept_when_a_reply_metric_fails(tmp_path: Path, tiny_ckpt: Path) -> None:
    """Generation can take an hour: the samples are written before any metric scores them."""
    failing = '[{"name": "emoacc", "class_path": "empathic_lora.evaluate.metrics.EmotionAccuracy", "init_args": {"data_dir": "/no/such/data"}}]'
    result = run_main(main, "test", "--config", "configs/tiny.yaml", "--ckpt_path", str(tiny_ckpt), "--model.num_generation_samples", "3",
                      "--model.generation_metrics", failing, "--trainer.default_root_dir", str(tmp_path),
                      "--trainer.enable_progress_bar", "false")
    assert_one_line_error(result, "/no/such/data")
    samples = (tmp_path / "lightning_logs" / "version_0" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 3
