"""DDP on CPU (gloo, 2 processes): the real data and the distilgpt2 architecture, sharded without
overlap, metrics reduced over ranks, files written by rank 0 only, and a checkpoint chat.py loads."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from conftest import run_python

from empathic_lora.data.batch_order import LengthGroupedSampler, ResumableDataLoader
from empathic_lora.train.cli import main

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
