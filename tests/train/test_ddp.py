"""DDP on CPU (gloo, 2 processes): the real data and the distilgpt2 architecture, sharded without
overlap, metrics reduced over ranks, files written by rank 0 only, and a checkpoint chat.py loads;
preference training (DPO) on the tiny model with one reference on every rank."""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from conftest import ROOT, run_main, run_python

from empathic_lora.data.batch_order import LengthGroupedSampler, ResumableDataLoader
from empathic_lora.train.cli import main
from empathic_lora.train.preference_objective import LOGGED, REFERENCE_KEY

WORLD, BATCH = 2, 3


def _lengths(n: int) -> list[int]:
    return [(i * 7) % 23 + 1 for i in range(n)]


def _shards(n: int, epoch: int, resume: dict | None = None) -> list[list[list[int]]]:
    """Each rank's batches of one epoch, from our loader as Lightning prepares it for DDP."""
    from lightning.pytorch.trainer.connectors.data_connector import _process_dataloader
    from lightning.pytorch.trainer.states import RunningStage, TrainerFn

    trainer = L.Trainer(accelerator="cpu", devices=WORLD, strategy="ddp", logger=False)  # not launched
    shards = []
    for rank in range(WORLD):
        # As the DataModule builds it in the process of each rank.
        sampler = LengthGroupedSampler(_lengths(n), BATCH, seed=5, num_replicas=WORLD, rank=rank)
        loader = _process_dataloader(trainer, TrainerFn.FITTING, RunningStage.TRAINING,
                                     ResumableDataLoader(list(range(n)), batch_size=BATCH, sampler=sampler))
        assert loader.sampler is sampler  # used as it is: not wrapped (and reshuffled) by Lightning
        sampler.set_epoch(epoch)  # Lightning's fit loop does this every epoch
        if resume is not None:
            loader.load_state_dict(resume)
        shards.append([batch.tolist() for batch in loader])
        assert resume is not None or len(shards[-1]) == len(loader)
    return shards


@pytest.mark.parametrize(("n", "repeats"), [(30, 0), (29, 0), (31, 1)])
def test_sampler_shards_without_overlap_under_lightning_ddp(n: int, repeats: int) -> None:
    epochs = [_shards(n, epoch) for epoch in (0, 1)]
    for epoch, shards in enumerate(epochs):
        assert len(shards[0]) == len(shards[1])  # the ranks step together
        seen = Counter(i for shard in shards for batch in shard for i in batch)
        assert set(seen) == set(range(n))  # full coverage
        # No overlap; only a last batch smaller than the number of ranks (n=31: 1 example for 2
        # ranks) is topped up with a repeat so that every rank has a batch to step with.
        assert sum(seen.values()) - n == repeats
        # Each step's rank batches are one length-grouped global batch, split.
        order = LengthGroupedSampler(_lengths(n), BATCH * WORLD, seed=5)
        order.set_epoch(epoch)
        for step, global_batch in enumerate(order.batches()):
            assert set(shards[0][step]) | set(shards[1][step]) >= set(global_batch)
            assert not set(shards[0][step]) & set(shards[1][step]) or len(global_batch) < WORLD
    assert epochs[0] != epochs[1]  # a new order every epoch


def test_a_rank_resumes_its_own_shard_mid_epoch() -> None:
    full = _shards(29, epoch=1)
    shape = {"batches": len(full[0]), "processes": WORLD}
    assert _shards(29, epoch=1, resume={"epoch": 1, "position": 2, **shape}) == [shard[2:] for shard in full]
    # A position is never applied to another epoch or to another number of processes.
    assert _shards(29, epoch=1, resume={"epoch": 0, "position": 2, **shape}) == full
    assert _shards(29, epoch=1, resume={"epoch": 1, "position": 2, **shape, "processes": 4}) == full


def _ddp_args(root: Path, ed_dir: Path, model_dir: Path, *extra: str) -> list[str]:
    return [
        "--config", "configs/distilgpt2_t4.yaml",
        "--model.base_model", str(model_dir), "--model.random_init", "true", "--model.num_generation_samples", "0",
        "--data.data_dir", str(ed_dir), "--data.max_examples", "8", "--data.max_length", "32",
        "--data.batch_size", "2", "--data.eval_batch_size", "2", "--data.num_workers", "0",
        "--trainer.accelerator", "cpu", "--trainer.precision", "32-true", "--trainer.log_every_n_steps", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(root), *extra,
    ]


def _column(metrics: Path, name: str) -> list[float]:
    with metrics.open() as f:
        return [float(row[name]) for row in csv.DictReader(f) if row.get(name)]


def test_ddp_two_processes_on_cpu(tmp_path: Path, ed_dir: Path, distilgpt2_dir: Path) -> None:
    result = run_python("train.py", "fit", *_ddp_args(
        tmp_path, ed_dir, distilgpt2_dir, "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.max_steps", "2"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr

    # Rank 0 alone wrote files: one run directory, one event file, one metrics.csv.
    runs = tmp_path / "lightning_logs"
    assert [p.name for p in runs.iterdir()] == ["version_0"]
    run = runs / "version_0"
    assert sorted(p.name for p in run.iterdir() if p.is_file() and not p.name.startswith("events")) == [
        "config.yaml", "hparams.yaml", "metrics.csv"]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 2
    assert len(checkpoint["callbacks"]["ExactResume"]["rng"]) == 2  # every rank's random state

    # val/ppl was reduced over both ranks' shards: one process over the whole split agrees.
    main(["validate", *_ddp_args(tmp_path / "single", ed_dir, distilgpt2_dir, "--ckpt_path", str(last))])
    ddp_ppl = _column(run / "metrics.csv", "val/ppl")
    assert len(ddp_ppl) == 1  # the validation at max_steps
    assert ddp_ppl[0] == pytest.approx(_column(tmp_path / "single" / "lightning_logs" / "version_0" / "metrics.csv", "val/ppl")[0], rel=1e-5)

    chat = run_python("chat.py", "--checkpoint", str(last), "--message", "I finally passed my driving test!")
    assert chat.returncode == 0, chat.stderr[-3000:]
    assert len(chat.stdout.splitlines()) == 1 and chat.stdout.strip()
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["strategy"] == "ddp"


class RecordFirstStep(L.Callback):
    """Saves what each rank's first training step saw: the reference log-probabilities and the loss
    (the DDP preference test loads it by class path in every process it launches)."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:  # noqa: ANN001
        if trainer.global_step == 1:
            torch.save({"reference": {k: v.cpu() for k, v in pl_module.reference_logps.items()}, "loss": outputs["loss"].cpu()},
                       self.directory / f"rank{trainer.global_rank}.pt")


def test_ddp_preference_training_two_processes_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every process the DDP launcher starts imports this module for the callback.
    paths = [str(Path(__file__).parent), str(ROOT / "tests"), os.environ.get("PYTHONPATH")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, paths)))
    record = {"class_path": "test_ddp.RecordFirstStep", "init_args": {"directory": str(tmp_path)}}
    dpo = ["--config", "configs/dpo.yaml", "--model.base_model", "builtin:tiny-gpt2", "--model.random_init", "true",
           "--model.r", "4", "--model.alpha", "8", "--model.target_modules", "[c_attn]", "--model.num_generation_samples", "0",
           "--data.max_examples", "16", "--data.batch_size", "2", "--data.eval_batch_size", "4", "--data.num_workers", "0",
           "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
           "--trainer.default_root_dir", str(tmp_path / "runs")]
    result = run_python("train.py", "fit", *dpo, "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.max_steps", "2",
                        f"--trainer.callbacks+={json.dumps(record)}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stderr
    run = tmp_path / "runs" / "lightning_logs" / "version_0"
    assert [p.name for p in run.parent.iterdir()] == ["version_0"]
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2
    reference = checkpoint[REFERENCE_KEY]
    assert not any(logps.isnan().any() for logps in reference.values())  # every pair's, not rank 0's shard only
    # Every rank trained against the same reference, the checkpoint's; each started at exactly ln 2.
    for rank in range(WORLD):
        first = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert set(first["reference"]) == set(reference) == {"train", "val"}
        for split in reference:
            torch.testing.assert_close(first["reference"][split], reference[split], atol=0, rtol=0)
        assert float(first["loss"]) == float(torch.tensor(math.log(2))), rank
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert all(any(row.get(f"train/{name}") for row in rows) for name in LOGGED)
    assert any(row.get("val/rewards/margins") and row.get("val/preference_loss") for row in rows)

    # One process resumes the two's run: the reference it brings covers the pairs as one process sees them.
    resumed = run_main(main, "fit", *dpo, "--ckpt_path", "last", "--trainer.max_steps", "3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = torch.load(run.parent / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)
    assert after["global_step"] == 3
    for split in reference:
        torch.testing.assert_close(after[REFERENCE_KEY][split], reference[split], atol=0, rtol=0)
