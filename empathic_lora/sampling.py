"""Batch order for training: random, yet with little padding.

Written by hand because neither torch nor Lightning ships a length-grouped sampler (transformers'
`LengthGroupedSampler` is tied to its Trainer). The recipe is the usual "megabatch" one: shuffle
all examples, sort each window of `bucket_batches` batches by length, cut it into batches and
shuffle the batches. Every example appears exactly once per epoch, the order depends only on
`seed` and the epoch (Lightning calls `set_epoch`), and it differs between epochs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


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
