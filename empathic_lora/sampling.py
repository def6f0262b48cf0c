"""Batch order for training: random, yet with little padding, and resumable mid-epoch.

Written by hand because neither torch nor Lightning ships a length-grouped sampler (transformers'
`LengthGroupedSampler` is tied to its Trainer). The recipe is the usual "megabatch" one: shuffle
all examples, sort each window of `bucket_batches` batches by length, cut it into batches and
shuffle the batches (`bucket_batches=1` is plain shuffling). Every example appears exactly once
per epoch, the order depends only on `seed` and the epoch (Lightning calls `set_epoch`), and it
differs between epochs. Because the order is a pure function of (seed, epoch), the position
inside the epoch is all a checkpoint needs to continue it: `ResumableDataLoader` keeps it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

log = logging.getLogger(__name__)


class LengthGroupedSampler(Sampler[int]):
    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, bucket_batches: int = 50):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.bucket_batches = bucket_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def batches(self) -> list[list[int]]:
        """This epoch's batches, in order."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        window = self.batch_size * self.bucket_batches
        grouped = [
            index
            for start in range(0, len(order), window)
            for index in sorted(order[start : start + window], key=self.lengths.__getitem__, reverse=True)
        ]
        batches = [grouped[i : i + self.batch_size] for i in range(0, len(grouped), self.batch_size)]
        # A short last batch stays last so that every other batch keeps `batch_size` examples.
        short = batches.pop() if batches and len(batches[-1]) < self.batch_size else None
        shuffled = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return shuffled + ([short] if short else [])

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from batch


class ResumableDataLoader(DataLoader):
    """A `DataLoader` whose position in the epoch Lightning saves in checkpoints and restores.

    Lightning checkpoints a loader's `state_dict()` and, on resume, calls `load_state_dict()`;
    here the state is (epoch, batches handed out), which suffices because the sampler's order
    depends only on its seed and epoch, under DDP too (Lightning's `DistributedSamplerWrapper`
    shards that same order). A position is only ever applied to the epoch it was saved in.
    Written by hand rather than with torchdata's `StatefulDataLoader`, which forks the
    DataLoader's private iterator classes (on torch 2.13 it already warns about a removed
    call): these few lines depend on nothing private.

    Skipped batches are loaded and dropped rather than skipped by index (which would need
    DataLoader internals); that costs a fraction of a second per thousand batches, once per
    resume.
    """

    # Class-level defaults, so Lightning can rebuild the loader (DDP) from its __init__ arguments.
    _position: int = 0
    _epoch: int | None = None
    _resume: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self._epoch, "position": self._position, "batches": len(self)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume = dict(state_dict)

    def __iter__(self) -> Iterator[Any]:
        # A generator: nothing below runs until the first batch is asked for, after Lightning
        # has called `set_epoch`, so the epoch read here is the one being trained.
        epoch = getattr(self.sampler, "epoch", None)
        resume, self._resume = self._resume, None
        start = 0
        if resume is not None and resume["epoch"] == epoch and resume["position"] < len(self):
            if resume["batches"] == len(self):
                start = resume["position"]
            else:
                log.warning(
                    "the checkpoint's epoch had %d batches, this one has %d (batch size or data changed): "
                    "epoch %s restarts from its first batch", resume["batches"], len(self), epoch,
                )
        self._epoch, self._position = epoch, start
        batches = super().__iter__()
        for _ in range(start):
            next(batches)
        for batch in batches:
            self._position += 1
            yield batch
