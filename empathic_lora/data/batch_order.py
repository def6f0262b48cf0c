"""Batch order for training: random, yet with little padding, sharded over DDP ranks, and
resumable mid-epoch.

Written by hand because neither torch nor Lightning ships a length-grouped sampler (transformers'
`LengthGroupedSampler` is tied to its Trainer). The recipe is the usual "megabatch" one: shuffle
all examples, sort each window of `bucket_batches` batches by length, cut it into batches and
shuffle the batches (`bucket_batches=1` is plain shuffling). The one exception to the shuffle
is the first batch of every epoch: it holds the longest examples, so the epoch's peak memory
comes at its first step and a run that does not fit fails there rather than hours in (transformers'
sampler puts its longest example first for the same reason). Every example appears exactly once
per epoch, the order depends only on `seed` and the epoch (Lightning calls `set_epoch`), and it
differs between epochs. Because the order is a pure function of (seed, epoch), the position
inside the epoch is all a checkpoint needs to continue it: `ResumableDataLoader` keeps it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from empathic_lora.errors import UserError

log = logging.getLogger(__name__)


class LengthGroupedSampler(DistributedSampler):
    """Length-grouped random batches; under DDP each rank gets its share of every batch.

    With `num_replicas` processes, each step's global batch of `num_replicas * batch_size`
    examples is grouped by length and dealt out to the ranks: no example goes to two ranks, every
    rank's batch holds similar lengths, and all ranks take the same number of steps (a last batch
    smaller than the number of ranks is topped up from the first batch, as DistributedSampler
    pads). It is a `DistributedSampler` so that Lightning uses it as it is: Lightning would wrap
    any other sampler in a `DistributedSamplerWrapper` that reshuffles it, losing the grouping.
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, seed: int = 0, bucket_batches: int = 50,
        num_replicas: int = 1, rank: int = 0,
    ) -> None:
        if len(lengths) < num_replicas:
            raise UserError(f"{len(lengths)} training examples cannot be shared by {num_replicas} processes")
        super().__init__(lengths, num_replicas=num_replicas, rank=rank, shuffle=False, seed=seed)
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.bucket_batches = bucket_batches

    def __len__(self) -> int:
        """How many examples this rank gets in an epoch."""
        full, rest = divmod(len(self.lengths), self.batch_size * self.num_replicas)
        return full * self.batch_size + (len(range(self.rank, max(rest, self.num_replicas), self.num_replicas)) if rest else 0)

    def batches(self) -> list[list[int]]:
        """This epoch's global batches (all ranks' examples of each step), in order."""
        size = self.batch_size * self.num_replicas
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        # The worst batch first: the `size` longest examples (ties drawn by the shuffle, as the
        # sort is stable), so every rank's first batch is at least as long as any later one.
        by_length = sorted(order, key=self.lengths.__getitem__, reverse=True)
        longest, chosen = by_length[:size], set(by_length[:size])
        order = [index for index in order if index not in chosen]
        window = size * self.bucket_batches
        grouped = [
            index
            for start in range(0, len(order), window)
            for index in sorted(order[start : start + window], key=self.lengths.__getitem__, reverse=True)
        ]
        batches = [grouped[i : i + size] for i in range(0, len(grouped), size)]
        # A short last batch stays last so that every other batch keeps `batch_size` examples.
        short = batches.pop() if batches and len(batches[-1]) < size else None
        shuffled = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return [longest] + shuffled + ([short] if short else [])

    def __iter__(self) -> Iterator[int]:
        batches = self.batches()
        for batch in batches:
            if len(batch) < self.num_replicas:
                batch = batch + batches[0][: self.num_replicas - len(batch)]
            yield from batch[self.rank :: self.num_replicas]


class ResumableDataLoader(DataLoader):
    """A `DataLoader` whose position in the epoch Lightning saves in checkpoints and restores.

    Lightning checkpoints a loader's `state_dict()` and, on resume, calls `load_state_dict()`;
    here the state is (epoch, batches handed out), which suffices because the sampler's order
    depends only on its seed and epoch, on every rank. A position is only ever applied to the
    epoch, and the number of batches and processes, it was saved with.
    Written by hand rather than with torchdata's `StatefulDataLoader`, which forks the
    DataLoader's private iterator classes (on torch 2.13 it already warns about a removed
    call): these few lines depend on nothing private.

    Skipped batches are loaded and dropped rather than skipped by index (which would need
    DataLoader internals); that costs a fraction of a second per thousand batches, once per
    resume.
    """

    # Class-level defaults: no __init__, so Lightning can rebuild the loader from its arguments.
    _position: int = 0
    _epoch: int | None = None
    _resume: dict[str, Any] | None = None

    def _shape(self) -> dict[str, int]:
        """What a saved position is only valid for: batches per epoch and processes sharing them."""
        return {"batches": len(self), "processes": getattr(self.sampler, "num_replicas", 1)}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self._epoch, "position": self._position, **self._shape()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume = dict(state_dict)

    def __iter__(self) -> Iterator[Any]:
        # A generator: nothing below runs until the first batch is asked for, after Lightning
        # has called `set_epoch`, so the epoch read here is the one being trained.
        epoch = getattr(self.sampler, "epoch", None)
        resume, self._resume = self._resume, None
        start = 0
        if resume is not None and resume["epoch"] == epoch and resume["position"] < len(self):
            saved = {key: resume.get(key) for key in self._shape()}
            if saved == self._shape():
                start = resume["position"]
            else:
                log.warning(
                    "the checkpoint's epoch was %s, this one is %s (batch size, data or processes changed): "
                    "epoch %s restarts from its first batch", saved, self._shape(), epoch,
                )
        self._epoch, self._position = epoch, start
        batches = super().__iter__()
        for _ in range(start):
            next(batches)
        for batch in batches:
            self._position += 1
            yield batch
