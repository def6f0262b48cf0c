"""A crash costs at most the steps since the last checkpoint, and a resumed run is the run that
was interrupted: same weights to 1e-6 as one that never stopped (distilgpt2 architecture, real data)."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT

from empathic_lora.errors import UserError
from empathic_lora.train.callbacks import ExactResume
from empathic_lora.train.checkpoint_io import SafeCheckpointIO
from empathic_lora.train.cli import find_last_checkpoint, main

EPOCHS, STEPS_PER_EPOCH = 2, 2  # 3 train examples kept of 4 at max_length 32, batch 2


def _args(root: Path, ed_dir: Path, model_dir: Path, *extra: str) -> list[str]:
    # A warm-up schedule that does not depend on max_steps, so a run stopped by max_steps follows
    # the same learning rates as the uninterrupted one; it spans the interruptions, so a scheduler
    # that is not restored shows. Dropout 0.05 (the recipe's) draws random numbers every step.
    return [
        "fit", "--config", "configs/distilgpt2_t4.yaml",
        "--model.base_model", str(model_dir), "--model.random_init", "true",
        "--model.scheduler", "constant", "--model.warmup_steps", "10",
        "--data.data_dir", str(ed_dir), "--data.max_examples", "4", "--data.max_length", "32",
        "--data.batch_size", "2", "--data.eval_batch_size", "2", "--data.num_workers", "0",
        "--trainer.accelerator", "cpu", "--trainer.precision", "32-true", "--trainer.limit_val_batches", "1",
        "--trainer.max_epochs", str(EPOCHS), "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0",
        "--trainer.callbacks.every_n_train_steps", "1",
        "--trainer.default_root_dir", str(root), *extra,
    ]


def _last(root: Path, version: int) -> dict:
    return torch.load(root / "lightning_logs" / f"version_{version}" / "checkpoints" / "last.ckpt", weights_only=True)


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], atol=1e-6, rtol=0, msg=key)


def _hashes(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, ed_dir: Path, distilgpt2_dir: Path) -> dict:
    root = tmp_path_factory.mktemp("uninterrupted")
    main(_args(root, ed_dir, distilgpt2_dir))
    return _last(root, 0)


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory, ed_dir: Path, distilgpt2_dir: Path) -> Path:
    """A run stopped by max_steps in the middle of its second epoch."""
    root = tmp_path_factory.mktemp("stopped")
    main(_args(root, ed_dir, distilgpt2_dir, "--trainer.max_steps", str(STEPS_PER_EPOCH + 1)))
    return root


def test_stop_mid_epoch_by_max_steps_then_resume(tmp_path: Path, stopped: Path, ed_dir: Path, distilgpt2_dir: Path, uninterrupted: dict) -> None:
    shutil.copytree(stopped, tmp_path, dirs_exist_ok=True)
    checkpoint = _last(tmp_path, 0)
    assert checkpoint["global_step"] == STEPS_PER_EPOCH + 1
    # Mid-epoch: epoch 1 after 1 of its batches, with the loader's place and the random state.
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "position": 1, "batches": STEPS_PER_EPOCH, "processes": 1}]
    assert len(checkpoint["callbacks"]["ExactResume"]["rng"]) == 1
    first_run = _hashes(tmp_path / "lightning_logs" / "version_0")

    main(_args(tmp_path, ed_dir, distilgpt2_dir, "--ckpt_path", "last"))
    _assert_same_weights(_last(tmp_path, 1), uninterrupted)
    assert _hashes(tmp_path / "lightning_logs" / "version_0") == first_run  # a new, versioned run


def test_without_restoring_rng_and_data_order_the_weights_differ(
    tmp_path: Path, stopped: Path, ed_dir: Path, distilgpt2_dir: Path, uninterrupted: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exactness above is not luck: skip what ExactResume restores and the run diverges."""
    shutil.copytree(stopped, tmp_path, dirs_exist_ok=True)
    monkeypatch.setattr(ExactResume, "on_train_batch_start", lambda *args: None)
    monkeypatch.setattr(ExactResume, "on_train_start", lambda *args: None)
    main(_args(tmp_path, ed_dir, distilgpt2_dir, "--ckpt_path", "last"))
    resumed = _last(tmp_path, 1)
    assert resumed["global_step"] == uninterrupted["global_step"]
    assert any(not torch.allclose(resumed["state_dict"][k], v, atol=1e-6, rtol=0) for k, v in uninterrupted["state_dict"].items())


def test_sigkill_then_resume_from_last(tmp_path: Path, ed_dir: Path, distilgpt2_dir: Path, uninterrupted: dict) -> None:
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    log = tmp_path / "killed.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "train.py", *_args(tmp_path, ed_dir, distilgpt2_dir)], cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=stderr,
        )
        try:
            while not last.exists() and process.poll() is None:
                time.sleep(0.05)
            process.send_signal(signal.SIGKILL)  # as soon as the first (periodic, mid-epoch) checkpoint is there
        finally:
            process.wait()
    assert process.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    killed_at = torch.load(last, weights_only=True)["global_step"]
    assert 0 < killed_at < EPOCHS * STEPS_PER_EPOCH

    main(_args(tmp_path, ed_dir, distilgpt2_dir, "--ckpt_path", "last"))
    resumed_run = tmp_path / "lightning_logs" / "version_1"
    assert yaml.safe_load((resumed_run / "config.yaml").read_text())["ckpt_path"] == str(last)
    _assert_same_weights(_last(tmp_path, 1), uninterrupted)


_WRITER = textwrap.dedent("""
    import os, sys, torch
    from empathic_lora.train.checkpoint_io import SafeCheckpointIO
    io, path = SafeCheckpointIO(), sys.argv[1]
    io.save_checkpoint({"global_step": 1, "state_dict": {"w": torch.ones(4)}}, path)
    real_save = torch.save
    def slow_save(obj, f):  # half a checkpoint, then hang: the parent kills us mid-write
        f.write(b"PK" + b"x" * 4096)
        f.flush()
        print("writing", flush=True)
        import time; time.sleep(60)
    torch.save = slow_save
    io.save_checkpoint({"global_step": 2, "state_dict": {"w": torch.zeros(4)}}, path)
""")


def test_kill_during_a_checkpoint_write_leaves_last_ckpt_intact(tmp_path: Path) -> None:
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(last)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout.readline().strip() == "writing"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert torch.load(last, weights_only=True)["global_step"] == 1  # the previous one, whole
    partial = list(last.parent.glob(".last.ckpt.*.tmp"))
    assert len(partial) == 1 and partial[0].stat().st_size > 4096  # the interrupted write went elsewhere
    assert find_last_checkpoint(str(tmp_path)) == str(last)  # `--ckpt_path last` never picks the partial file


def test_non_finite_weights_are_never_written(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    io = SafeCheckpointIO()
    io.save_checkpoint({"global_step": 3, "state_dict": {"model.lora_A": torch.ones(2)}}, path)
    good = path.read_bytes()
    with pytest.raises(UserError, match=r"step 4: state_dict\.model\.lora_B is not finite; the last good .*last\.ckpt is kept"):
        io.save_checkpoint({"global_step": 4, "state_dict": {"model.lora_B": torch.tensor([1.0, float("nan")])}}, path)
    with pytest.raises(UserError, match="optimizer_states.0.state.0.exp_avg is not finite"):
        io.save_checkpoint({"global_step": 4, "state_dict": {}, "optimizer_states": [
            {"state": {0: {"exp_avg": torch.tensor([float("inf")])}}}]}, path)
    assert path.read_bytes() == good
    assert not list(tmp_path.glob(".*.tmp"))


# -- checkpointing through the CLI, on the offline tiny config --------------------------------------
def _tiny(root: Path, *extra: str) -> None:
    main(["fit", "--config", "configs/tiny.yaml", "--trainer.max_epochs", "2", "--trainer.enable_progress_bar",
          "false", "--trainer.enable_model_summary", "false", "--model.num_generation_samples", "0",
          "--trainer.default_root_dir", str(root), *extra])


def test_every_checkpoint_is_written_atomically_and_last_is_always_newest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[tuple[str, int]] = []
    save = SafeCheckpointIO.save_checkpoint

    def recording_save(self, checkpoint, path, storage_options=None):  # noqa: ANN001
        writes.append((Path(path).name, checkpoint["global_step"]))
        save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(SafeCheckpointIO, "save_checkpoint", recording_save)
    # mode max: val/ppl falls, so only the first validation "improves"; Lightning alone would then
    # leave last.ckpt at the end of epoch 0.
    _tiny(tmp_path, "--trainer.callbacks.every_n_train_steps", "5", "--trainer.callbacks.mode", "max")
    steps_per_epoch = 13
    last_writes = [step for name, step in writes if name == "last.ckpt"]
    assert last_writes == [5, 10, steps_per_epoch, 15, 20, 25, 2 * steps_per_epoch]
    checkpoints = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    on_disk = sorted(p.name for p in checkpoints.iterdir())
    assert on_disk == ["best-epoch0-step13.ckpt", "last.ckpt"]
    assert set(on_disk) <= {name for name, _ in writes} and not any(p.is_symlink() for p in checkpoints.iterdir())
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 2 * steps_per_epoch


def test_save_last_link_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        _tiny(tmp_path, "--trainer.callbacks.save_last", "link")
    assert exit_.value.code == 2
    assert "save_last: link is not supported" in capsys.readouterr().err


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # lr 1e30: step 1 is computed from sane weights and saved; it leaves weights that overflow.
    with pytest.raises(SystemExit) as exit_:
        _tiny(tmp_path, "--model.lr", "1e30", "--model.warmup_steps", "0", "--trainer.callbacks.every_n_train_steps", "1")
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert f"error: the training loss is nan at step 2 (epoch 0); training stopped before applying it and the last good checkpoint is kept: {last}" in err
    kept = torch.load(last, weights_only=True)
    assert kept["global_step"] == 1
    assert all(torch.isfinite(t).all() for t in kept["state_dict"].values())


def test_fp16_skipped_steps_are_counted_not_failed(tmp_path: Path) -> None:
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.plugins import MixedPrecision

    from empathic_lora.data.datamodule import EmpatheticDialoguesDataModule
    from empathic_lora.train.callbacks import NonFiniteGuard
    from empathic_lora.train.lora_module import EmpatheticLoRAModule

    L.seed_everything(0)
    model = EmpatheticLoRAModule("builtin:tiny-gpt2", random_init=True, num_generation_samples=0)
    data = EmpatheticDialoguesDataModule("builtin:sample", tokenizer=model.tokenizer, max_length=64)
    # A scale far too large for fp16: the first steps' gradients overflow and are skipped.
    precision = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**24))
    guard = NonFiniteGuard()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=12, plugins=[precision], callbacks=[guard], logger=CSVLogger(tmp_path),
        log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0,
    )
    trainer.fit(model, data)
    assert trainer.global_step == 12
    assert 0 < guard.amp_skipped_steps < 12
    import csv

    with (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").open() as f:
        logged = [float(row["train/amp_skipped_steps"]) for row in csv.DictReader(f) if row.get("train/amp_skipped_steps")]
    assert logged[-1] == guard.amp_skipped_steps
    assert all(torch.isfinite(p).all() for p in model.parameters())
