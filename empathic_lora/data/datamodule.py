"""EmpatheticDialogues as training examples: the LightningDataModule, its cache and its collator."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from datasets import Dataset, load_from_disk
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from empathic_lora.conversation import DEFAULT_HISTORY_TURNS, Formatter, Turn
from empathic_lora.data import preference_pairs
from empathic_lora.data.batch_order import LengthGroupedSampler, ResumableDataLoader
from empathic_lora.data.download import (
    OFFICIAL_SHA256,
    OFFICIAL_URL,
    SPLIT_FILES,
    check_data_dir,
    ensure_downloaded,
)
from empathic_lora.data.emotion_labels import label_ids
from empathic_lora.data.raw_csv import SAMPLE, SAMPLE_DIR, Row, read_split
from empathic_lora.errors import UserError
from empathic_lora.paths import default_cache_dir, publish
from empathic_lora.ranges import MaxLength, NonNegativeInt, PositiveInt

log = logging.getLogger(__name__)

Format = Literal["dialogue", "seed"]
# Bump when the tokenized layout or the conversation format changes, so old caches are not reused.
CACHE_VERSION = 4


@dataclass(frozen=True)
class Example:
    conv_id: str
    emotion: str
    situation: str
    context: tuple[Turn, ...]
    target: str


def build_examples(rows: Sequence[Row], format: Format) -> list[Example]:
    """`dialogue`: one example per listener turn, the conversation so far as context.
    `seed`: one example per row, the situation as the only context (the reference notebook)."""
    if format == "seed":
        return [Example(r.conv_id, r.emotion, r.situation, (Turn("speaker", r.situation),), r.utterance) for r in rows]
    conversations: dict[str, list[Row]] = {}
    for row in rows:
        conversations.setdefault(row.conv_id, []).append(row)
    examples = []
    for conv_id, turns in conversations.items():
        turns.sort(key=lambda r: r.utterance_idx)
        for i, row in enumerate(turns):
            if row.utterance_idx % 2 == 0:
                context = tuple(
                    Turn("speaker" if r.utterance_idx % 2 else "listener", r.utterance) for r in turns[:i]
                )
                examples.append(Example(conv_id, row.emotion, row.situation, context, row.utterance))
    return examples


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(f"{text}|{tokenizer.eos_token}".encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Collator:
    """Pads a batch to its longest example (never to `max_length`) and builds the labels.

    Labels are -100 on the prompt and on padding, the token id elsewhere: the target and the final
    eos are trained. Padding is found by position, never by `pad_id`, because pad = eos and the
    eos label must stay. Items with an `emotion` class index add an `emotion` tensor.
    """

    pad_id: int

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(item["input_ids"]) for item in items)
        input_ids = torch.full((len(items), longest), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), longest), dtype=torch.long)
        labels = torch.full((len(items), longest), -100, dtype=torch.long)
        for row, item in enumerate(items):
            ids = torch.tensor(item["input_ids"], dtype=torch.long)
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
            labels[row, item["prompt_length"] : len(ids)] = ids[item["prompt_length"] :]
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if "emotion" in items[0]:
            batch["emotion"] = torch.tensor([item["emotion"] for item in items], dtype=torch.long)
        return batch


@dataclass
class PairCollator:
    """A batch of preference pairs as one `Collator` batch of 2N rows, the N chosen examples
    first and then the N rejected ones (TRL's concatenated layout: one forward for both), plus
    each pair's `pair_index` (where its reference log-probabilities are kept)."""

    pad_id: int

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [{"input_ids": item[f"{side}_ids"], "prompt_length": item[f"{side}_prompt_length"]}
                for side in ("chosen", "rejected") for item in items]
        batch = Collator(self.pad_id)(rows)
        batch["pair_index"] = torch.tensor([item["pair_index"] for item in items], dtype=torch.long)
        return batch


class EmpatheticDialoguesDataModule(L.LightningDataModule):
    def __init__(
        self,
        data_dir: str | None = None,
        format: Format = "dialogue",
        history_turns: NonNegativeInt | None = DEFAULT_HISTORY_TURNS,
        max_length: MaxLength = 256,
        batch_size: PositiveInt = 8,
        eval_batch_size: PositiveInt = 8,
        num_workers: NonNegativeInt = 0,
        group_by_length: bool = True,
        max_examples: PositiveInt | None = None,
        seed: NonNegativeInt | None = None,
        cache_dir: str | None = None,
        download_url: str = OFFICIAL_URL,
        download_sha256: str = OFFICIAL_SHA256,
        pairs: str | None = None,
        val_pairs: str | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        """EmpatheticDialogues as causal-LM examples.

        Args:
            data_dir: Directory with the official `train.csv`, `valid.csv`, `test.csv`. `None`
                downloads the official archive into `cache_dir`; `builtin:sample` is the small
                hand-written sample shipped in the package (the offline quickstart).
            format: `dialogue` (one example per listener turn, the conversation so far as
                context, as chat prompts it) or `seed` (situation -> utterance, one per row, the
                reference notebook's format).
            history_turns: Keep at most this many preceding turns as context (`null`: all).
            max_length: Longest example in tokens. Over-long examples lose their oldest context
                first; one whose target alone does not fit is dropped.
            batch_size: Training batch size.
            eval_batch_size: Validation, test and predict batch size.
            num_workers: DataLoader worker processes.
            group_by_length: Batch examples of similar length together (shuffled buckets), so
                less compute is spent on padding.
            max_examples: Use only the first N examples of each split (quick experiments).
            seed: Seed of the training order; `null` (the default) follows `seed_everything`, so one
                seed drives weights, dropout and data order alike. Set it to vary the order alone.
            cache_dir: Where downloads and tokenized data are cached (default
                `$EMPATHIC_LORA_CACHE` or `~/.cache/empathic_lora`).
            download_url: Archive fetched when `data_dir` is `null`.
            download_sha256: Expected sha256 of that archive; a mismatch is refused.
            pairs: Preference pairs to train on (`--model.objective dpo`) instead of the replies: a
                JSONL file in TRL's preference format (`empathic_lora/data/preference_pairs.py`), or
                `builtin:opposite-emotion`, EmPO-style pairs built on the fly from this data's
                splits (chosen: the reference reply; rejected: a reply from a conversation of the
                opposite valence). Validation still scores the replies (val/ppl) as in SFT.
            val_pairs: Pairs scored at each validation (the `val/rewards/...` metrics): a JSONL file;
                `null` with `builtin:opposite-emotion` builds them from the validation split,
                with a file in `pairs` none are scored.
            tokenizer: Set from the model by the CLI; pass it yourself outside the CLI.
        """
        super().__init__()
        self.save_hyperparameters(ignore=["tokenizer"])
        self.tokenizer = tokenizer
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.datasets: dict[str, Dataset] = {}
        self._examples: dict[str, list[Example]] = {}
        self.pair_datasets: dict[str, Dataset] = {}

    # -- sources -------------------------------------------------------------------------------
    def raw_dir(self) -> Path:
        data_dir = self.hparams.data_dir
        if data_dir == SAMPLE:
            return SAMPLE_DIR
        if data_dir is None:
            return ensure_downloaded(self.cache_dir, self.hparams.download_url, self.hparams.download_sha256)
        return Path(data_dir).expanduser()

    def examples(self, split: str) -> list[Example]:
        """The untokenized examples of a split (`train`, `val`, `test`), e.g. for generation."""
        if split not in self._examples:
            rows = read_split(self.raw_dir() / SPLIT_FILES[split])
            examples = build_examples(rows, self.hparams.format)
            self._examples[split] = examples[: self.hparams.max_examples]
        return self._examples[split]

    @property
    def order_seed(self) -> int:
        """`seed`, or else the run's `seed_everything` (which Lightning publishes as PL_GLOBAL_SEED)."""
        if self.hparams.seed is not None:
            return self.hparams.seed
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    @property
    def formatter(self) -> Formatter:
        if self.tokenizer is None:
            raise ValueError("EmpatheticDialoguesDataModule needs a tokenizer (the CLI links the model's)")
        return Formatter(self.tokenizer, self.hparams.history_turns)

    # -- tokenized cache -----------------------------------------------------------------------
    def _cache_path(self, split: str) -> Path:
        h = self.hparams
        key = json.dumps(
            [CACHE_VERSION, _file_sha256(self.raw_dir() / SPLIT_FILES[split]), tokenizer_fingerprint(self.tokenizer),
             h.format, h.history_turns, h.max_length, h.max_examples],
        )
        return self.cache_dir / "tokenized" / hashlib.sha256(key.encode()).hexdigest()[:24] / split

    def _tokenize(self, split: str, path: Path) -> None:
        examples = self.examples(split)
        emotions = label_ids([e.emotion for e in examples], str(self.raw_dir() / SPLIT_FILES[split]))
        formatter = self.formatter
        table = Dataset.from_dict({"example_index": list(range(len(examples)))})

        def encode(batch: dict[str, list]) -> dict[str, list]:
            chosen = [examples[i] for i in batch["example_index"]]
            ids, prompt_lengths = formatter.encode_examples(
                [e.context for e in chosen], [e.target for e in chosen], self.hparams.max_length
            )
            kept = [i for i, p in enumerate(prompt_lengths) if p >= 0]
            return {
                "example_index": [batch["example_index"][i] for i in kept],
                "input_ids": [ids[i] for i in kept],
                "prompt_length": [prompt_lengths[i] for i in kept],
                "emotion": [emotions[batch["example_index"][i]] for i in kept],
                "length": [len(ids[i]) for i in kept],
            }

        fingerprint = path.parent.name + split
        table = table.map(encode, batched=True, batch_size=2000, new_fingerprint=fingerprint, desc=f"tokenizing {split}")
        dropped = len(examples) - len(table)
        if len(table) == 0:
            raise UserError(
                f"--data.max_length {self.hparams.max_length} is smaller than every target in the {split} split"
            )

        def write(staging: Path) -> None:
            table.save_to_disk(str(staging))
            (staging / "empathic_lora.json").write_text(json.dumps({"examples": len(examples), "dropped": dropped}))

        publish(path, write)  # two runs sharing the cache may tokenize the same split at once

    def _load(self, split: str) -> Dataset:
        path = self._cache_path(split)
        if not path.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
            self._tokenize(split, path)
        meta = json.loads((path / "empathic_lora.json").read_text())
        if meta["dropped"]:
            log.warning(
                "%s: dropped %d of %d examples whose reply alone exceeds max_length %d",
                split, meta["dropped"], meta["examples"], self.hparams.max_length,
            )
        return load_from_disk(str(path))

    # -- Lightning hooks -------------------------------------------------------------------------
    def _splits(self, stage: str | None) -> list[str]:
        return {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": ["test"]}.get(
            stage or "", ["train", "val", "test"]
        )

    def prepare_data(self) -> None:
        # Runs on one process: download and tokenize once, so every DDP rank finds the cache.
        raw = self.raw_dir()
        check_data_dir(raw, list(SPLIT_FILES))
        for split in self._splits(self.trainer.state.fn.value if self.trainer and self.trainer.state.fn else None):
            self._load(split)

    def setup(self, stage: str | None = None) -> None:
        check_data_dir(self.raw_dir(), list(SPLIT_FILES))
        for split in self._splits(stage):
            if split not in self.datasets:
                self.datasets[split] = self._load(split)

    def _collator(self) -> Collator:
        return Collator(pad_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id)

    def _loader(self, split: str, batch_size: int, sampler: Any, loader_class: type[DataLoader] = DataLoader) -> DataLoader:
        workers = self.hparams.num_workers
        return loader_class(
            self.datasets[split],
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=self._collator(),
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=bool(self.trainer and self.trainer.accelerator.__class__.__name__ == "CUDAAccelerator"),
            # Each new iterator draws a worker seed; from its own generator, so that validation
            # and epoch starts leave the global RNG (LoRA dropout) alone and resume stays exact.
            generator=torch.Generator().manual_seed(self.order_seed),
        )

    def train_dataloader(self) -> DataLoader:
        if self.hparams.pairs is not None:
            return self._pairs_train_loader()
        dataset = self.datasets["train"]
        # Under DDP the sampler shards itself (see LengthGroupedSampler); plain shuffling is the
        # one-batch bucket.
        ranks = {"num_replicas": self.trainer.world_size, "rank": self.trainer.global_rank} if self.trainer else {}
        buckets = {} if self.hparams.group_by_length else {"bucket_batches": 1}
        sampler = LengthGroupedSampler(dataset["length"], self.hparams.batch_size, seed=self.order_seed, **buckets, **ranks)
        return self._loader("train", self.hparams.batch_size, sampler, ResumableDataLoader)

    def _eval_loader(self, split: str) -> DataLoader:
        # Order does not change corpus-level metrics; sorting by length minimises padding.
        lengths = self.datasets[split]["length"]
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        return self._loader(split, self.hparams.eval_batch_size, order)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    # -- preference pairs (`pairs`) ----------------------------------------------------------------
    def preference_pairs(self, split: str) -> list[preference_pairs.Pair]:
        """The untokenized pairs of `train` or `val` (see `pairs`, `val_pairs`)."""
        source = self.hparams.pairs if split == "train" else self.hparams.val_pairs
        if source is None and split == "val" and self.hparams.pairs == preference_pairs.OPPOSITE_EMOTION:
            source = preference_pairs.OPPOSITE_EMOTION
        if source is None:
            return []
        if source == preference_pairs.OPPOSITE_EMOTION:
            return preference_pairs.opposite_emotion_pairs(self.examples(split), seed=self.order_seed)
        return preference_pairs.read(source)[: self.hparams.max_examples]

    def _tokenize_pairs(self, split: str) -> Dataset:
        """Chosen and rejected examples through the same formatter and `max_length` as SFT; a pair
        either of whose replies does not fit is dropped. Kept in memory: pairs are few and cheap."""
        pairs = self.preference_pairs(split)
        contexts = [pair.context for pair in pairs]
        encoded = {
            side: self.formatter.encode_examples(contexts, [getattr(pair, side) for pair in pairs], self.hparams.max_length)
            for side in ("chosen", "rejected")
        }
        kept = [i for i in range(len(pairs)) if encoded["chosen"][1][i] >= 0 and encoded["rejected"][1][i] >= 0]
        if pairs and len(kept) < len(pairs):
            log.warning("%s pairs: dropped %d of %d whose chosen or rejected reply alone exceeds max_length %d",
                        split, len(pairs) - len(kept), len(pairs), self.hparams.max_length)
        if split == "train" and not kept:
            raise UserError(f"--data.pairs {self.hparams.pairs}: no pair fits --data.max_length {self.hparams.max_length}")
        columns: dict[str, list[Any]] = {"pair_index": list(range(len(kept)))}
        for side, (ids, prompt_lengths) in encoded.items():
            columns[f"{side}_ids"] = [ids[i] for i in kept]
            columns[f"{side}_prompt_length"] = [prompt_lengths[i] for i in kept]
        columns["length"] = [max(len(c), len(r)) for c, r in zip(columns["chosen_ids"], columns["rejected_ids"])]
        return Dataset.from_dict(columns)

    def setup_pairs(self) -> None:
        """Tokenize the training and validation pairs (the module calls it when it trains on pairs)."""
        if self.hparams.pairs is None:
            raise UserError("--model.objective dpo trains on preference pairs: set --data.pairs "
                            f"(a TRL-format JSONL file, or {preference_pairs.OPPOSITE_EMOTION})")
        for split in ("train", "val"):
            if split not in self.pair_datasets:
                self.pair_datasets[split] = self._tokenize_pairs(split)

    def _pair_sampler(self, rank: int, world_size: int) -> LengthGroupedSampler:
        buckets = {} if self.hparams.group_by_length else {"bucket_batches": 1}
        return LengthGroupedSampler(self.pair_datasets["train"]["length"], self.hparams.batch_size, seed=self.order_seed,
                                    num_replicas=world_size, rank=rank, **buckets)

    def _pairs_train_loader(self) -> DataLoader:
        self.setup_pairs()
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        return ResumableDataLoader(
            self.pair_datasets["train"], batch_size=self.hparams.batch_size, sampler=self._pair_sampler(rank, world),
            collate_fn=PairCollator(self._collator().pad_id), num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0, generator=torch.Generator().manual_seed(self.order_seed),
        )

    def reference_batches(self, world_size: int = 1) -> Iterator[dict[str, torch.Tensor]]:
        """Every training pair once, in the very batches each process trains them in the first
        epoch: reference log-probabilities computed on them equal the policy's at step 0 bit for
        bit (same shapes, same padding), so the first logged loss is exactly ln 2."""
        self.setup_pairs()
        collate, size = PairCollator(self._collator().pad_id), self.hparams.batch_size
        dataset = self.pair_datasets["train"]
        for rank in range(world_size):
            sampler = self._pair_sampler(rank, world_size)
            sampler.set_epoch(0)
            indices = list(sampler)
            for start in range(0, len(indices), size):
                yield collate([dataset[i] for i in indices[start : start + size]])

    def pair_batches(self, split: str, rank: int = 0, world_size: int = 1) -> Iterator[dict[str, torch.Tensor]]:
        """This process's share of a split's pairs, in batches of similar length (evaluation)."""
        self.setup_pairs()
        dataset = self.pair_datasets[split]
        order = sorted(range(len(dataset)), key=dataset["length"].__getitem__)[rank::world_size]
        collate, size = PairCollator(self._collator().pad_id), self.hparams.eval_batch_size
        for start in range(0, len(order), size):
            yield collate([dataset[i] for i in order[start : start + size]])
