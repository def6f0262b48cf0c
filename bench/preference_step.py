"""A preference (DPO) step against an SFT step at the same batch size, side by side (issue 22's
target: at most 2.5x). Both train the same module on the same pairs: the SFT step on the B chosen
replies, the DPO step on the B pairs (2B sequences; the reference log-probabilities are
precomputed once, as in training, so they are not part of a step). Steps alternate, so machine
load hits both alike; prints the medians.

    .venv/bin/python bench/preference_step.py --base builtin:smollm2-135m-instruct --batch 4 --steps 6
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from empathic_lora.data.datamodule import Collator, EmpatheticDialoguesDataModule
from empathic_lora.train.lora_module import EmpatheticLoRAModule


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="builtin:tiny-gpt2")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    extra = {"random_init": True} if args.base == "builtin:tiny-gpt2" else {}
    module = EmpatheticLoRAModule(args.base, objective="dpo", num_generation_samples=0, target_modules="all-linear", **extra)
    data = EmpatheticDialoguesDataModule("builtin:sample", pairs="builtin:opposite-emotion", tokenizer=module.tokenizer,
                                         history_turns=2, max_length=128, batch_size=args.batch)
    data.setup_pairs()
    pairs = data.pair_datasets["train"]
    module.reference_logps = {"train": torch.zeros(len(pairs), 2)}
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-5)
    collate = Collator(module.tokenizer.eos_token_id)
    batches = list(data.reference_batches())[: args.steps + 1]
    sft, dpo = [], []
    for index, pair_batch in enumerate(batches):
        rows = [pairs[i] for i in pair_batch["pair_index"].tolist()]
        sft_batch = collate([{"input_ids": r["chosen_ids"], "prompt_length": r["chosen_prompt_length"]} for r in rows])
        for kind, times in (("sft", sft), ("dpo", dpo)):
            start = time.perf_counter()
            if kind == "sft":
                logits, targets, _ = module.forward_batch(sft_batch)
                loss = F.cross_entropy(logits, targets)
            else:
                loss = module._preference_terms(pair_batch, "train").loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if index:  # the first step of each warms up
                times.append(time.perf_counter() - start)
    sft_s, dpo_s = statistics.median(sft), statistics.median(dpo)
    print(f"base {args.base}, batch {args.batch} (DPO: {args.batch} pairs = {2 * args.batch} sequences), {len(sft)} steps each, "
          f"{args.threads} threads")
    print(f"SFT step median {sft_s:.3f} s, DPO step median {dpo_s:.3f} s, ratio {dpo_s / sft_s:.2f}x (target <= 2.5x)")


if __name__ == "__main__":
    main()
