"""`--model.objective dpo` through the CLI (configs/dpo.yaml on the tiny model): the first loss is
exactly ln 2 with zero margins, a resumed run is the run that was interrupted, `init_from` starts
from another run's adapter, and mistakes are one line."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error, run_main

from empathic_lora.errors import UserError
from empathic_lora.train.cli import main
from empathic_lora.train.lora_module import EmpatheticLoRAModule
from empathic_lora.train.policy_start import load_adapter
from empathic_lora.train.preference_objective import REFERENCE_KEY

# configs/dpo.yaml on the tiny model, with configs/tiny.yaml's adapter so that tiny_ckpt fits it.
TINY = ["--model.base_model", "builtin:tiny-gpt2", "--model.random_init", "true", "--model.r", "16", "--model.alpha", "32",
        "--model.target_modules", "[c_attn, c_proj, c_fc]", "--model.num_generation_samples", "0", "--model.lr", "0.01",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
SMALL = ["--data.max_examples", "24"]  # a few steps of 4 pairs


def _fit(root: Path, *extra: str) -> None:
    result = run_main(main, "fit", "--config", "configs/dpo.yaml", *TINY, "--trainer.default_root_dir", str(root), *extra)
    assert result.returncode == 0, result.stderr[-3000:]


def _rows(root: Path, version: int = 0) -> list[dict[str, str]]:
    with (root / "lightning_logs" / f"version_{version}" / "metrics.csv").open() as f:
        return [row for row in csv.DictReader(f) if row.get("train/loss")]


def _last(root: Path, version: int) -> dict:
    return torch.load(root / "lightning_logs" / f"version_{version}" / "checkpoints" / "last.ckpt", weights_only=True)


@pytest.fixture(scope="module")
def uninterrupted_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One whole epoch from the zero-shot tiny base."""
    root = tmp_path_factory.mktemp("dpo_uninterrupted")
    _fit(root, *SMALL)
    return root


def test_step_zero_loss_is_ln2_with_zero_margins_then_the_policy_moves(uninterrupted_root: Path) -> None:
    tmp_path = uninterrupted_root
    rows = _rows(tmp_path)
    first = rows[0]
    assert int(first["step"]) == 0
    assert float(first["train/loss"]) == float(torch.tensor(math.log(2)))  # float32 ln 2, to the last bit
    for name in ("rewards/margins", "rewards/chosen", "rewards/rejected", "rewards/accuracies"):
        assert float(first[f"train/{name}"]) == 0.0, name
    assert float(first["train/logps/chosen"]) < 0 and float(first["train/logps/rejected"]) < 0
    assert float(rows[-1]["train/rewards/margins"]) != 0.0  # training moved the policy away from the reference
    with (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").open() as f:
        validated = [row for row in csv.DictReader(f) if row.get("val/rewards/margins")]
    assert validated and validated[-1]["val/ppl"] and validated[-1]["val/preference_loss"]


def _validated(root: Path) -> dict[str, str]:
    with (root / "lightning_logs" / "version_0" / "metrics.csv").open() as f:
        return [row for row in csv.DictReader(f) if row.get("val/rewards/margins")][-1]


def test_validate_scores_the_pairs_against_the_runs_own_reference(tmp_path: Path, uninterrupted_root: Path) -> None:
    last = uninterrupted_root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    result = run_main(main, "validate", "--config", "configs/dpo.yaml", *TINY, *SMALL, "--ckpt_path", str(last),
                      "--trainer.default_root_dir", str(tmp_path / "trained"))
    assert result.returncode == 0, result.stderr[-3000:]
    validated, fitted = _validated(tmp_path / "trained"), _validated(uninterrupted_root)  # the fit validated after its last step
    for name in ("val/rewards/margins", "val/rewards/accuracies", "val/preference_loss", "val/logps/chosen"):
        assert float(validated[name]) == pytest.approx(float(fitted[name]), rel=1e-5), name
    assert float(validated["val/rewards/margins"]) != 0.0
    # Without a preference checkpoint the policy validated is its own reference.
    result = run_main(main, "validate", "--config", "configs/dpo.yaml", *TINY, *SMALL, "--trainer.default_root_dir", str(tmp_path / "base"))
    assert result.returncode == 0, result.stderr[-3000:]
    base = _validated(tmp_path / "base")
    assert float(base["val/rewards/margins"]) == pytest.approx(0.0, abs=1e-6)
    assert float(base["val/preference_loss"]) == pytest.approx(math.log(2), abs=1e-6)


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_root: Path) -> dict:
    return _last(uninterrupted_root, 0)


def test_resume_of_a_dpo_run_is_exact(tmp_path: Path, uninterrupted: dict) -> None:
    _fit(tmp_path, *SMALL, "--trainer.max_steps", "2", "--trainer.callbacks.every_n_train_steps", "1")
    stopped = _last(tmp_path, 0)
    assert stopped["global_step"] == 2 and REFERENCE_KEY in stopped
    _fit(tmp_path, *SMALL, "--ckpt_path", "last")
    resumed = _last(tmp_path, 1)
    assert resumed["global_step"] == uninterrupted["global_step"] > 2
    # The reference is the starting policy's, not the resumed weights'.
    for split in ("train", "val"):
        torch.testing.assert_close(resumed[REFERENCE_KEY][split], uninterrupted[REFERENCE_KEY][split], atol=0, rtol=0)
    assert resumed["state_dict"].keys() == uninterrupted["state_dict"].keys()
    for key, value in uninterrupted["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, atol=1e-6, rtol=0, msg=key)


def test_ld_dpo_starts_at_ln2_and_weighs_the_longer_replies_less(tmp_path: Path, uninterrupted_root: Path) -> None:
    """`--model.dpo_ld_alpha 0`: policy and reference weigh alike, so step 0 is still exactly ln 2;
    the sequence log-probabilities only count each pair's shared length, so they are higher."""
    _fit(tmp_path, *SMALL, "--trainer.max_steps", "1", "--model.dpo_ld_alpha", "0")
    first, plain = _rows(tmp_path)[0], _rows(uninterrupted_root)[0]
    assert float(first["train/loss"]) == float(torch.tensor(math.log(2)))
    assert float(first["train/logps/chosen"]) + float(first["train/logps/rejected"]) > (
        float(plain["train/logps/chosen"]) + float(plain["train/logps/rejected"]))
    assert _last(tmp_path, 0)["hyper_parameters"]["dpo_ld_alpha"] == 0.0


def test_init_from_copies_another_runs_adapter_and_refuses_one_that_does_not_fit(tiny_ckpt: Path) -> None:
    module = EmpatheticLoRAModule("builtin:tiny-gpt2", random_init=True, r=16, alpha=32, target_modules=["c_attn", "c_proj", "c_fc"],
                                  num_generation_samples=0)
    run_dir = tiny_ckpt.parents[1]
    assert load_adapter(module, str(run_dir)) == tiny_ckpt
    saved = torch.load(tiny_ckpt, weights_only=True)["state_dict"]
    state = module.state_dict()
    assert saved and all(torch.equal(state[key], value) for key, value in saved.items())
    other = EmpatheticLoRAModule("builtin:tiny-gpt2", random_init=True, r=4, target_modules=["c_attn"], num_generation_samples=0)
    with pytest.raises(UserError, match=r"^--model.init_from .*last.ckpt: the checkpoint was trained on base model 'builtin:tiny-gpt2'"):
        load_adapter(other, str(tiny_ckpt))
    same_targets = EmpatheticLoRAModule("builtin:tiny-gpt2", random_init=True, r=4, alpha=32,
                                        target_modules=["c_attn", "c_proj", "c_fc"], num_generation_samples=0)
    with pytest.raises(UserError, match=r"^--model.init_from .*: its adapter weight .* has shape"):
        load_adapter(same_targets, str(tiny_ckpt))


def test_a_dpo_run_continues_from_an_sft_checkpoint(tmp_path: Path, tiny_ckpt: Path, uninterrupted_root: Path) -> None:
    _fit(tmp_path, *SMALL, "--trainer.max_steps", "1", "--model.init_from", str(tiny_ckpt.parents[2].parent))
    first, zero_shot = _rows(tmp_path)[0], _rows(uninterrupted_root)[0]
    assert float(first["train/loss"]) == float(torch.tensor(math.log(2)))
    # The same first batch, scored by the SFT adapter: the reference replies are likelier than under the zero-shot base.
    assert float(first["train/logps/chosen"]) > float(zero_shot["train/logps/chosen"])


@pytest.mark.parametrize(("flags", "needles", "checked_before_the_run"), [
    (["--data.pairs", "null"], ["--model.objective dpo", "--data.pairs"], False),
    (["--model.emotion_loss_weight", "0.5"], ["--model.emotion_loss_weight 0"], True),
    (["--model.dpo_loss", "ipo", "--model.dpo_label_smoothing", "0.1"], ["--model.dpo_label_smoothing 0.1"], True),
    (["--model.dpo_label_smoothing", "0.5"], ["--model.dpo_label_smoothing"], True),
    (["--model.init_from", "no/such/run.ckpt"], ["--model.init_from no/such/run.ckpt"], True),
    (["--data.pairs", "no/such/pairs.jsonl"], ["--data.pairs no/such/pairs.jsonl"], True),
    (["--data.val_pairs", "no/such/val.jsonl"], ["--data.val_pairs no/such/val.jsonl"], True),
    (["--model.dpo_ld_alpha", "1.5"], ["--model.dpo_ld_alpha", "1.5"], True),
])
def test_mistakes_are_one_line(tmp_path: Path, flags: list[str], needles: list[str], checked_before_the_run: bool) -> None:
    result = run_main(main, "fit", "--config", "configs/dpo.yaml", *TINY, "--trainer.default_root_dir", str(tmp_path), *flags)
    assert_one_line_error(result, *needles)
    assert not list(tmp_path.rglob("*.ckpt"))
    if checked_before_the_run:  # no empty version_N left behind for a run that could not start
        assert not (tmp_path / "lightning_logs").exists()


def test_a_dpo_run_is_evaluated_after_its_starting_run_is_gone(tmp_path: Path, tiny_ckpt: Path) -> None:
    """The DPO checkpoint holds the adapter and the reference: `init_from`, recorded in its
    hyperparameters, is not read again by validate or test."""
    start = tmp_path / "sft.ckpt"
    shutil.copy(tiny_ckpt, start)
    _fit(tmp_path / "dpo", *SMALL, "--trainer.max_steps", "1", "--model.init_from", str(start))
    start.unlink()
    result = run_main(main, "validate", "--config", "configs/dpo.yaml", *TINY, *SMALL, "--trainer.default_root_dir", str(tmp_path / "val"),
                      "--ckpt_path", str(tmp_path / "dpo" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "val/rewards/margins" in result.stdout


def test_old_runs_keep_loading_as_sft(tiny_ckpt: Path, tmp_path: Path) -> None:
    """A checkpoint from before the objective existed has none of its keys: it is an SFT run."""
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    assert "objective" not in ckpt["hyper_parameters"] or ckpt["hyper_parameters"]["objective"] == "sft"
    old = tmp_path / "old.ckpt"
    for key in ("objective", "dpo_beta", "dpo_loss", "dpo_label_smoothing", "dpo_ld_alpha", "init_from"):
        ckpt["hyper_parameters"].pop(key, None)
    torch.save(ckpt, old)
    shutil.copy(old, tmp_path / "copy.ckpt")
    result = run_main(main, "validate", "--config", "configs/tiny.yaml", "--ckpt_path", str(old), "--model.num_generation_samples", "0",
                      "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false")
    assert result.returncode == 0, result.stderr[-2000:]
