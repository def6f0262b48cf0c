"""Training variants of the project side by side on one budget: the PEFT methods of
configs/methods/ (the methods table of docs/results.md), or the base-loading levers
`--model.dtype` and `--model.gradient_checkpointing` (docs/benchmarks.md).

    python bench/train_variants.py methods --model builtin:smollm2-135m-instruct --data-dir builtin:sample \\
        --format dialogue --steps 24 --warmup 2 --batch-size 8 --max-length 128
    python bench/train_variants.py loading --model builtin:smollm2-135m-instruct --data-dir builtin:sample \\
        --format dialogue --steps 10 --warmup 2 --batch-size 8 --max-length 128

Every variant is the project's own fit (`train_throughput.measure_project`), each in its own
process, all in lockstep: the same examples in the same order, timed in the same minutes of a
shared machine, peak RSS each its own. `methods` takes each config's `model:` adapter and learning
rate (the budget comes from the flags) and, after training, evaluates val/ppl and test/word_ppl
(untimed, all splits in full). Prints one JSON line per variant, then a Markdown table.
`--only=NAME[,NAME]` runs just those variants (e.g. one per process, all at once, where a
machine is too loaded for taking turns; then the examples/s are not lockstep-fair).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import train_throughput as bench
import yaml

from empathic_lora.errors import UserError, run_cli

METHODS_DIR = Path(__file__).resolve().parents[1] / "configs" / "methods"
MODULE_KEYS = ("r", "alpha", "dropout", "bias", "target_modules", "peft", "lr", "weight_decay", "warmup_steps", "scheduler")


def method_variants() -> list[bench.Variant]:
    """One per configs/methods/*.yaml: its adapter and optimiser settings, its context window."""
    variants = []
    for path in sorted(METHODS_DIR.glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        module = {k: v for k, v in config["model"].items() if k in MODULE_KEYS}
        data = {"history_turns": config["data"]["history_turns"]}
        variants.append(bench.Variant(path.stem, module={**module, "num_generation_samples": 0}, data=data, evaluate=True))
    return variants


LOADING = [
    bench.Variant("float32 (default)"),
    bench.Variant("dtype bfloat16", module={"dtype": "bfloat16"}),
    bench.Variant("gradient checkpointing", module={"gradient_checkpointing": True}),
    bench.Variant("bfloat16 + checkpointing", module={"dtype": "bfloat16", "gradient_checkpointing": True}),
]


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("methods", "loading"):
        raise UserError("the first argument must be `methods` or `loading` (then train_throughput.py's flags)")
    which, only = argv[0], [v for v in argv[1:] if v.startswith("--only=")]
    settings = bench.parse_args([v for v in argv[1:] if v not in only])
    bench.prepare(settings)
    variants = method_variants() if which == "methods" else LOADING
    if only:  # one variant per invocation, to run them at once on a machine too loaded for turns
        names = only[0].removeprefix("--only=").split(",")
        variants = [v for v in variants if v.name in names]
        if not variants:
            raise UserError(f"{only[0]}: no such variant")
    rows = bench.side_by_side([(bench.measure_project, (settings, variant)) for variant in variants], settings.warmup + settings.steps)
    for row in rows:
        print(json.dumps(row), flush=True)
    first = rows[0]
    if which == "methods":
        print("\n| method | trainable parameters | examples/s | vs lora | peak RSS MB | val ppl | test word ppl |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        lora = next((row for row in rows if row["implementation"] == "lora"), first)
        for row in rows:
            print(f"| {row['implementation']} | {row['trainable_parameters']:,} | {row['examples_per_s']:.2f} "
                  f"| {row['examples_per_s'] / lora['examples_per_s']:.2f}x | {row['peak_rss_mb']:.0f} "
                  f"| {row['val_ppl']:.2f} | {row['test_word_ppl']:.1f} |")
    else:
        print("\n| variant | examples/s | vs float32 | peak RSS MB | vs float32 |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for row in rows:
            print(f"| {row['implementation']} | {row['examples_per_s']:.2f} | {row['examples_per_s'] / first['examples_per_s']:.2f}x "
                  f"| {row['peak_rss_mb']:.0f} | {row['peak_rss_mb'] / first['peak_rss_mb']:.2f} |")


if __name__ == "__main__":
    run_cli(main)
