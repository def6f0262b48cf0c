"""What each speed lever of the project's training step is worth: the lever table of docs/benchmarks.md.

    python bench/train_levers.py --model ../shared/models/distilgpt2-architecture --random-init \
        --data-dir ../shared/data/empatheticdialogues --format seed --steps 10 --batch-size 8 \
        --max-length 128 --precision 32-true

Same flags, same examples and the same timing as `train_throughput.py`. Each row is one lockstep
pair: the project as `train.py` runs it against the project with one lever switched off (or one
candidate lever switched on), and first the project against the recipe. It prints the JSON lines
of every pair and a Markdown table; "vs project" is measured within the row's own pair, "vs
recipe" chains it with the first pair's project / recipe ratio.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import train_throughput as bench

from empathic_lora.errors import run_cli

VARIANTS = [
    bench.Variant("without length grouping (random batches)", group_by_length=False),
    bench.Variant("without dynamic padding (pad to --max-length)", dynamic_padding=False),
    bench.Variant("without the supervised-only head (full logits)", supervised_head=False),
    bench.Variant("eager attention instead of SDPA", attention="eager"),
    bench.Variant("without any of the three above", dynamic_padding=False, supervised_head=False),
    bench.Variant("with 2 data-loader workers", num_workers=2),
    bench.Variant("with gelu_new instead of the fused tanh-GELU", fused_gelu=False),
    bench.Variant("with torch.compile (not in the project)", compile=True),
]


def main(argv: Sequence[str] | None = None) -> None:
    settings = bench.parse_args(argv)
    dialogues = bench.prepare(settings)
    steps = settings.warmup + settings.steps
    project, recipe = bench.side_by_side([(bench.measure_project, (settings,)), (bench.measure_recipe, (settings, dialogues))], steps)
    print(json.dumps(project), json.dumps(recipe), sep="\n", flush=True)
    speedup, memory = project["examples_per_s"] / recipe["examples_per_s"], project["peak_rss_mb"] / recipe["peak_rss_mb"]
    table = [f"| project (as train.py runs it) | 1.00x | {speedup:.2f}x | {project['padded_tokens_per_s'] / project['examples_per_s']:.0f} | {project['peak_rss_mb']:.0f} | {memory:.2f} |"]
    for variant in VARIANTS:
        try:
            reference, row = bench.side_by_side([(bench.measure_project, (settings,)), (bench.measure_project, (settings, variant))], steps)
        except RuntimeError as error:  # e.g. torch.compile without a working compiler: a row saying so
            table.append(f"| {variant.name} | failed: {str(error).splitlines()[-1]} | | | | |")
            continue
        print(json.dumps(reference), json.dumps(row), sep="\n", flush=True)
        vs_project = row["examples_per_s"] / reference["examples_per_s"]
        table.append(
            f"| {variant.name} | {vs_project:.2f}x | {vs_project * speedup:.2f}x "
            f"| {row['padded_tokens_per_s'] / row['examples_per_s']:.0f} | {row['peak_rss_mb']:.0f} "
            f"| {row['peak_rss_mb'] / recipe['peak_rss_mb']:.2f} |"
        )
    table.append(f"| recipe | {1 / speedup:.2f}x | 1.00x | {recipe['padded_tokens_per_s'] / recipe['examples_per_s']:.0f} | {recipe['peak_rss_mb']:.0f} | 1.00 |")
    print("\n| variant | examples/s vs project | vs recipe | padded width | peak RSS MB | RSS vs recipe |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(table))


if __name__ == "__main__":
    run_cli(main)
