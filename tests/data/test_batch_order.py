"""The length-grouped sampler: a random order of every example per epoch, with little padding."""

from __future__ import annotations

import random

import pytest
import torch

from empathic_lora.data.batch_order import LengthGroupedSampler

BATCH = 8


def _lengths(n: int = 1003) -> list[int]:
    """Lengths spread like tokenized EmpatheticDialogues examples; n leaves a short last batch."""
    rng = random.Random(0)
    return [min(256, max(8, int(rng.lognormvariate(3.6, 0.5)))) for _ in range(n)]


def _epoch(sampler: LengthGroupedSampler, epoch: int) -> list[int]:
    sampler.set_epoch(epoch)
    return list(sampler)


def _padded_tokens(order: list[int], lengths: list[int]) -> int:
    """Tokens a DataLoader with `batch_size=BATCH` over `order` computes, padding included."""
    batches = [order[i : i + BATCH] for i in range(0, len(order), BATCH)]
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)


@pytest.mark.parametrize("n", [1003, 400, 5])
def test_every_example_exactly_once_per_epoch(n: int) -> None:
    sampler = LengthGroupedSampler(_lengths(n), BATCH, seed=3)
    assert len(sampler) == n
    for epoch in range(3):
        assert sorted(_epoch(sampler, epoch)) == list(range(n))


def test_order_is_reproducible_under_a_seed() -> None:
    lengths = _lengths()
    first, again = LengthGroupedSampler(lengths, BATCH, seed=1), LengthGroupedSampler(lengths, BATCH, seed=1)
    assert _epoch(first, 0) == _epoch(again, 0)
    assert _epoch(first, 4) == _epoch(again, 4)
    assert _epoch(first, 0) != _epoch(LengthGroupedSampler(lengths, BATCH, seed=2), 0)


def test_order_differs_between_epochs() -> None:
    sampler = LengthGroupedSampler(_lengths(), BATCH, seed=0)
    epochs = [_epoch(sampler, epoch) for epoch in range(3)]
    assert epochs[0] != epochs[1] != epochs[2] != epochs[0]
    # Not just the batches reshuffled: the examples are regrouped into different batches.
    batches = [{frozenset(order[i : i + BATCH]) for i in range(0, len(order), BATCH)} for order in epochs]
    assert len(batches[0] & batches[1]) < len(batches[0]) // 2


def test_batches_are_length_grouped_yet_shuffled() -> None:
    lengths = _lengths()
    order = _epoch(LengthGroupedSampler(lengths, BATCH, seed=0), 0)
    random_order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    real = sum(lengths)
    grouped_padding = _padded_tokens(order, lengths) - real
    random_padding = _padded_tokens(random_order, lengths) - real
    assert grouped_padding < 0.25 * random_padding
    # Shuffled, not sorted: batch widths neither rise nor fall through the epoch.
    widths = [max(lengths[i] for i in order[j : j + BATCH]) for j in range(0, len(order), BATCH)]
    assert widths != sorted(widths) and widths != sorted(widths, reverse=True)


@pytest.mark.parametrize(("n", "bucket_batches"), [(1003, 50), (1003, 1), (5, 50)])
def test_first_batch_of_every_epoch_holds_the_longest_examples(n: int, bucket_batches: int) -> None:
    # The epoch's peak memory comes at its first step, so a run that does not fit fails there.
    lengths = _lengths(n)
    sampler = LengthGroupedSampler(lengths, BATCH, seed=0, bucket_batches=bucket_batches)
    for epoch in range(3):
        first = _epoch(sampler, epoch)[:BATCH]
        assert sorted(lengths[i] for i in first) == sorted(lengths, reverse=True)[:BATCH][::-1]


@pytest.mark.parametrize("world", [2, 3])
def test_each_ranks_first_batch_is_its_longest_under_ddp_sharding(world: int) -> None:
    lengths = _lengths(401)
    for epoch in range(2):
        shards = [_epoch(LengthGroupedSampler(lengths, BATCH, seed=7, num_replicas=world, rank=rank), epoch) for rank in range(world)]
        # The first global step holds the BATCH * world longest examples, dealt out to the ranks.
        first_step = sorted(lengths[i] for shard in shards for i in shard[:BATCH])
        assert first_step == sorted(lengths, reverse=True)[: BATCH * world][::-1]
        # A rank's memory goes with its padded batch; with 2 ranks the last global batch (1
        # example) is topped up by repeating a first-batch example, a batch of one.
        for shard in shards:
            padded = [_padded_tokens(shard[i : i + BATCH], lengths) for i in range(0, len(shard), BATCH)]
            assert padded[0] == max(padded)
