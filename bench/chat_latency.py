"""Chat speed: first-token latency and tokens/s of a 64-token greedy reply, adapter applied on the
fly (what `chat.py --checkpoint CKPT` runs) against merged into the base (`chat.py --checkpoint
MERGED_DIR`), side by side in one run.

    python bench/chat_latency.py --model ../shared/models/distilgpt2-architecture --random-init

The reply is decoded exactly as chat decodes it (`GenerationSettings().generation_config`: greedy,
KV cache, stop strings, a streamer decoding every token) except that it is forced to be exactly
`--new-tokens` long (`min_new_tokens`), so that both variants do the same work whatever the
weights. The prompt is a four-turn conversation encoded by chat's formatter. Repeats alternate
between the variants so that a change in machine load hits both alike. Output: one JSON line per
variant (medians over the repeats), then one line of merged / adapter ratios.
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import PreTrainedModel, TextStreamer

# Runnable from a checkout as `python bench/...` even where the package is not pip-installed.
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from empathic_lora.conversation import Formatter, Turn
from empathic_lora.errors import ArgumentParser
from empathic_lora.lm.decoding import GenerationSettings, prompt_budget
from empathic_lora.train.lora_module import EmpatheticLoRAModule

CONVERSATION = [
    Turn("speaker", "I have three deadlines this week and my manager just added another project."),
    Turn("listener", "That sounds like a lot to carry at once. How are you holding up?"),
    Turn("speaker", "Not well. I stay late every night and I still feel behind."),
    Turn("listener", "Staying late every night is exhausting. Have you been able to rest at all?"),
    Turn("speaker", "I feel overwhelmed with work"),
]


class TimingStreamer(TextStreamer):
    """Decodes every token as chat's streamer does, and notes when each one arrived."""

    def __init__(self, tokenizer) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        if not self.next_tokens_are_prompt:
            self.times.append(time.perf_counter())
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        pass  # timing only: nothing is printed


@torch.inference_mode()
def reply_timing(model: PreTrainedModel, formatter: Formatter, settings: GenerationSettings) -> dict[str, float]:
    streamer = TimingStreamer(formatter.tokenizer)
    start = time.perf_counter()
    prompt = torch.tensor([formatter.encode_prompt(CONVERSATION, prompt_budget(model, settings))])
    config = settings.generation_config(formatter.tokenizer)
    config.min_new_tokens = settings.max_new_tokens  # the benchmark's only change: exactly this long
    model.generate(
        input_ids=prompt, attention_mask=torch.ones_like(prompt), generation_config=config,
        tokenizer=formatter.tokenizer, streamer=streamer,
    )
    total = streamer.times[-1] - start
    return {
        "prompt_tokens": prompt.shape[1],
        "new_tokens": len(streamer.times),
        "first_token_ms": 1000 * (streamer.times[0] - start),
        "tokens_per_s": len(streamer.times) / total,
    }


def main() -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="base model directory (e.g. the distilgpt2 architecture)")
    parser.add_argument("--random-init", action="store_true", help="fresh weights from a seed (architecture-only directory)")
    parser.add_argument("--new-tokens", type=int, default=64, help="reply length, forced")
    parser.add_argument("--repeats", type=int, default=5, help="timed replies per variant, after one warm-up each")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    module = EmpatheticLoRAModule(args.model, random_init=args.random_init).eval()
    variants = {"adapter": module.model, "merged": copy.deepcopy(module.model).merge_and_unload()}
    formatter = Formatter(module.tokenizer, history_turns=4)
    settings = GenerationSettings(max_new_tokens=args.new_tokens)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for repeat in range(args.repeats + 1):
        for name, model in variants.items():
            timing = reply_timing(model, formatter, settings)
            if repeat:  # the first round warms up
                runs[name].append(timing)
    results = {}
    for name, timings in runs.items():
        results[name] = {
            "variant": name,
            "first_token_ms": round(statistics.median(t["first_token_ms"] for t in timings), 1),
            "tokens_per_s": round(statistics.median(t["tokens_per_s"] for t in timings), 1),
            "new_tokens": timings[0]["new_tokens"],
            "prompt_tokens": timings[0]["prompt_tokens"],
            "repeats": len(timings),
            "threads": torch.get_num_threads(),
        }
        print(json.dumps(results[name]), flush=True)
    merged, on_the_fly = results["merged"], results["adapter"]
    print(json.dumps({
        "ratio": "merged/adapter",
        "first_token_ms": round(merged["first_token_ms"] / on_the_fly["first_token_ms"], 2),
        "tokens_per_s": round(merged["tokens_per_s"] / on_the_fly["tokens_per_s"], 2),
    }))


if __name__ == "__main__":
    main()
