"""The model card of an export: `README.md` in the Hugging Face convention (YAML metadata, then
what the model is, how it was trained and how well it does, what it is for, how to load it).

Everything comes from files the run already wrote: the resolved `config.yaml` beside the checkpoint
and, when `train.py test|validate` scored that very checkpoint, its `results.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from empathic_lora.conversation import MARKERS
from empathic_lora.evaluate import results_file
from empathic_lora.paths import RUNS

CARD_FILE = "README.md"
# Hub ids and licenses of the bases this project names (README, configs/); others are named as
# given, their license left to the reader (a wrong license in metadata is worse than none).
KNOWN_BASES = {
    "distilgpt2": ("distilbert/distilgpt2", "apache-2.0"),
    "distilbert/distilgpt2": ("distilbert/distilgpt2", "apache-2.0"),
    "builtin:smollm2-135m-instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
}
OFFICIAL_DATA = "facebook/empathetic_dialogues"
SAMPLE_DATA = "builtin:sample"
PROJECT_LICENSE = "apache-2.0"  # a random_init base holds no one's weights: only this project's code made it


def run_config(checkpoint: Path) -> dict[str, Any] | None:
    """The resolved config of the run that wrote `checkpoint` (runs/.../version_N/checkpoints/X.ckpt)."""
    return results_file.training_config(str(checkpoint))


def run_results(checkpoint: Path) -> dict[str, Any] | None:
    """The newest results.json of the run root that scored exactly `checkpoint` (test before validate)."""
    runs = checkpoint.resolve().parents[2]  # ROOT/lightning_logs
    if runs.name != RUNS:
        return None
    found: list[tuple[bool, float, dict[str, Any]]] = []
    for path in runs.glob(f"version_*/{results_file.RESULTS_FILE}"):
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        scored = results.get("checkpoint") if isinstance(results, dict) else None
        if scored and Path(scored).resolve() == checkpoint.resolve():
            found.append((results.get("stage") == "test", path.stat().st_mtime, results))
    return max(found, key=lambda item: item[:2])[2] if found else None


def _metadata(meta: dict[str, Any], data_dir: str | None) -> dict[str, Any]:
    base = meta["base"]
    hub_id, license_ = KNOWN_BASES.get(base.get("base_model", ""), (None, None))
    if base.get("random_init"):
        hub_id, license_ = None, PROJECT_LICENSE  # an architecture with fresh weights: no base to point at
    card: dict[str, Any] = {}
    if hub_id:
        card["base_model"] = hub_id
    card["library_name"] = "peft" if meta["kind"] == "adapter" else "transformers"
    if license_:
        card["license"] = license_
    if data_dir != SAMPLE_DATA:
        card["datasets"] = [OFFICIAL_DATA]
    card["language"] = ["en"]
    card["pipeline_tag"] = "text-generation"
    card["tags"] = ["empathic_lora", "empathetic-dialogues", "conversational", "lora"] + (
        ["peft"] if meta["kind"] == "adapter" else ["merged"]
    )
    return card


def _results_table(results: dict[str, Any]) -> str:
    rows = "\n".join(f"| `{name}` | {value:.4g} |" for name, value in sorted(results["metrics"].items()))
    return (
        f"Scored by `train.py {results['stage']}` on the {results['split']} split ({results['examples']} examples, "
        f"{results['generation_samples']} generated replies; commit {results.get('git_commit')}):\n\n"
        f"| metric | value |\n| --- | --- |\n{rows}\n\n"
        "The metrics are defined in the project's docs/metrics.md."
    )


def _base_section(meta: dict[str, Any], directory: str) -> str:
    base = meta["base"]
    name = base.get("base_model")
    rebuild = (
        "`empathic_lora.lm.pretrained.load_model(**json.load(open(\"" + directory + "/empathic_lora.json\"))[\"base\"])` "
        "(with this project installed)"
    )
    if base.get("random_init"):
        return (f"The base is `{name}`'s architecture with fresh random weights (seed {base.get('init_seed')}), "
                f"which exist nowhere to download: rebuild them exactly with {rebuild}.")
    if (name or "").startswith("builtin:") or base.get("gguf_file"):
        hub = KNOWN_BASES.get(name or "", (None,))[0]
        beside = f"; `{hub}` from the Hub is the same model in full precision, close to but not the weights trained on" if hub else ""
        return (f"The base is `{name}`{' (' + base['gguf_file'] + ')' if base.get('gguf_file') else ''}, dequantized "
                f"from its GGUF file{beside}. Rebuild the exact base with {rebuild}.")
    return f"The base is `{name}`."


def _how_to_load(meta: dict[str, Any], directory: str, base_id: str | None) -> str:
    if meta["kind"] == "adapter":
        base = (f"AutoModelForCausalLM.from_pretrained(\"{base_id}\")  # the base, see above" if base_id else
                f"load_model(**json.load(open(\"{directory}/empathic_lora.json\"))[\"base\"])  # empathic_lora's")
        model = f"base = {base}\nmodel = PeftModel.from_pretrained(base, \"{directory}\")"
        config = f"generation_config=GenerationConfig.from_pretrained(\"{directory}\"), "  # a PeftModel generates with the base's
        imports = "from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig" + (
            "" if base_id else "\nimport json\nfrom empathic_lora.lm.pretrained import load_model")
    else:
        model = f"model = AutoModelForCausalLM.from_pretrained(\"{directory}\")  # reads generation_config.json too"
        config = ""
        imports = "from transformers import AutoModelForCausalLM, AutoTokenizer"
    stops = json.dumps(list(MARKERS))
    if meta["kind"] == "merged":
        engine = f"`vllm serve {directory}`"
    else:
        engine = (f"`vllm serve {base_id or 'BASE'} --enable-lora --lora-modules empathic={directory} "
                  f"--chat-template {directory}/chat_template.jinja` (the base's own template otherwise)")
    return f"""```python
{imports}

tokenizer = AutoTokenizer.from_pretrained("{directory}")
{model}
messages = [{{"role": "user", "content": "I feel overwhelmed with work"}}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
output = model.generate(**inputs, {config}tokenizer=tokenizer)  # stop strings need the tokenizer
reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
print(reply.split("{MARKERS[0]}")[0].split("{MARKERS[1]}")[0].strip())  # generate keeps the stop string
```

An OpenAI-compatible engine reads the chat template from `tokenizer_config.json` and eos from
`generation_config.json`, but takes stop strings only per request (untested here):
{engine}, then `"stop": {stops}` in each request (TGI: the same `stop` field).
With this project: `python chat.py --checkpoint {directory}` or `python serve.py --checkpoint {directory}`,
which also run the crisis check."""


def build(meta: dict[str, Any], config: dict[str, Any] | None, results: dict[str, Any] | None, directory: str) -> str:
    """The card of an export described by its `empathic_lora.json` contents `meta`, with the run's
    resolved `config` and `results` when there are any; `directory` is how the card names the export."""
    data = (config or {}).get("data") or meta.get("data", {})
    metadata = _metadata(meta, data.get("data_dir"))
    base_id = metadata.get("base_model")
    kind = "a LoRA-family adapter (PEFT)" if meta["kind"] == "adapter" else "a full model with its adapter merged in"
    if data.get("data_dir") == SAMPLE_DATA:
        trained_on = ("the small hand-written sample of empathetic dialogues shipped with empathic_lora "
                      "(EmpatheticDialogues' layout, not its data; a demonstration, not a useful model)")
    else:
        trained_on = f"[EmpatheticDialogues](https://huggingface.co/datasets/{OFFICIAL_DATA}) (CC BY-NC 4.0) from `{data.get('data_dir') or 'the official archive'}`"
    window = "all turns" if data.get("history_turns") is None else f"the last {data.get('history_turns')} turns"
    sections = [
        "---\n" + yaml.safe_dump(metadata, sort_keys=False) + "---",
        f"# {Path(directory).name}",
        f"This is {kind}, fine-tuned with empathic_lora to answer someone who describes a "
        f"feeling or a situation with an empathetic, fitting reply. {_base_section(meta, directory)}"
        + (" This directory needs no base: the weights are all here." if meta["kind"] == "merged" else ""),
        "## Training",
        f"Trained on {trained_on}, in the `{data.get('format', 'dialogue')}` format (the context is {window} of the "
        f"conversation, the target the listener's next reply), for {meta.get('global_step')} optimizer steps. "
        "The loss covers the reply and its final eos only. The resolved configuration of the run "
        f"(`config.yaml`{'' if config else ': not found beside the checkpoint, so the recorded settings'}):",
        "```yaml\n" + yaml.safe_dump(config or {"model": meta["base"], "data": data}, sort_keys=False).rstrip() + "\n```",
        "## Results",
        _results_table(results) if results else "No `train.py test` or `validate` run scored this checkpoint.",
        "## Prompt format",
        f"The model was trained on `\" {MARKERS[0]} {{speaker turn}} {MARKERS[1]} {{listener turn}} ... {MARKERS[1]}\"`, "
        "each marker and text tokenized as separate pieces with a leading space; the markers are plain text, "
        "not special tokens. The chat template in `tokenizer_config.json` builds exactly these tokens from "
        "OpenAI-style messages (`user`: the speaker, `assistant`: the listener, `system` left out), keeping "
        f"{window}; it cannot cut a conversation to the model's context window, which this project's chat "
        f"does. A reply ends at eos or at the next marker: `generation_config.json` holds both "
        f"(`stop_strings`: {', '.join(f'`{m}`' for m in MARKERS)}).",
        "## Intended use",
        "Research on empathetic response generation, and demonstrations of LoRA fine-tuning. Replies are "
        "short and generic; they are not checked by a person.",
        "## Limitations",
        "This is not a therapist, a counsellor or a crisis service, and it must not stand in for one. It can "
        "be wrong, dismissive or inappropriate, and it repeats the biases of its base model and data. The "
        "crisis-language check (pointing a person at help) lives in empathic_lora's `chat.py` and `serve.py`, "
        "not in these weights: serving them any other way has no such check.",
        "## How to load",
        _how_to_load(meta, directory, base_id),
    ]
    return "\n\n".join(sections) + "\n"


def write(meta: dict[str, Any], checkpoint: Path, directory: Path, name: str) -> None:
    """README.md in `directory` for the export of `checkpoint`; `name` is how the card refers to it."""
    card = build(meta, run_config(checkpoint), run_results(checkpoint), name)
    (directory / CARD_FILE).write_text(card, encoding="utf-8")
