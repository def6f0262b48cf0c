"""An export used the way people deploy models: its chat template, generation config and model card,
read by plain transformers (`apply_chat_template`, `pipeline`) and by this project's serve.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import run_main
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peft import PeftModel
from transformers import AutoTokenizer, GenerationConfig, pipeline

from empathic_lora.chat import repl
from empathic_lora.conversation import MARKERS, Formatter, Turn, chat_template, extract_reply
from empathic_lora.data.datamodule import build_examples
from empathic_lora.data.raw_csv import SAMPLE_DIR, read_split
from empathic_lora.export import exporter, model_card, prompt_files
from empathic_lora.lm import checkpoint_file
from empathic_lora.lm.pretrained import load_model
from empathic_lora.safety.crisis_check import CrisisCheck
from empathic_lora.serve.api_server import ServeConfig, create_app
from empathic_lora.session import trained_model

MESSAGE = "I feel overwhelmed with work"
ROLES = {"speaker": "user", "listener": "assistant"}


@pytest.fixture(scope="module")
def exports(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stacks")
    return {"adapter": exporter.export(str(tiny_ckpt), str(root / "adapter")),
            "merged": exporter.export(str(tiny_ckpt), str(root / "merged"), merge=True)}


@pytest.fixture(scope="module")
def tokenizer(exports: dict[str, Path]):
    return AutoTokenizer.from_pretrained(str(exports["adapter"]))


@pytest.fixture(scope="module")
def formatter(exports: dict[str, Path], tokenizer) -> Formatter:
    return Formatter(tokenizer, trained_model.load(exports["adapter"], device="cpu").default_history_turns())


@pytest.fixture(scope="module")
def chat_reply(tiny_ckpt: Path) -> str:
    result = run_main(repl.main, "--checkpoint", str(tiny_ckpt), "--message", MESSAGE, "--seed", "0", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def messages(turns: list[Turn]) -> list[dict[str, str]]:
    return [{"role": ROLES[t.role], "content": t.text} for t in turns]


def test_both_exports_carry_the_template_the_stop_strings_and_a_card(exports: dict[str, Path], formatter: Formatter) -> None:
    for kind, directory in exports.items():
        template = chat_template(formatter)
        assert json.loads((directory / "tokenizer_config.json").read_text())["chat_template"] == template
        assert (directory / prompt_files.TEMPLATE_FILE).read_text() == template
        generation = GenerationConfig.from_pretrained(str(directory))
        assert generation.stop_strings == list(MARKERS) and generation.eos_token_id == formatter.eos_id
        card = (directory / model_card.CARD_FILE).read_text()
        front = yaml.safe_load(card.split("---\n")[1])
        assert front["library_name"] == ("peft" if kind == "adapter" else "transformers")
        assert front["license"] == "apache-2.0" and "base_model" not in front  # a random_init base is nowhere on the Hub
        assert "datasets" not in front  # the shipped sample is not EmpatheticDialogues' data
        assert "empathic_lora.json" in card and "not a therapist" in card  # how to rebuild the base; the limits
        assert "history_turns: 4" in card  # the run's resolved config
        assert model_card.CARD_FILE in checkpoint_file.read_export_meta(directory)["files"]  # replaced by --force


def test_the_template_gives_the_formatters_tokens_on_the_test_split(tokenizer, formatter: Formatter) -> None:
    examples = build_examples(read_split(SAMPLE_DIR / "test.csv"), "dialogue")
    assert len(examples) > 10
    for example in examples:
        chat = messages(list(example.context))
        assert chat, example
        ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)["input_ids"]
        assert ids == formatter.encode_prompt(example.context, 10_000), example
        # A conversation ending with the listener and no generation prompt is a training example.
        full = tokenizer.apply_chat_template([*chat, {"role": "assistant", "content": example.target}])["input_ids"]
        (expected,), _ = formatter.encode_examples([example.context], [example.target], 10_000)
        assert full == expected, example


texts = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(["", " ", "<|prompt|>", "<||response|||>", "a\n ", "'s"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["speaker", "listener", "system"]), texts), min_size=1, max_size=7))
def test_the_template_gives_the_formatters_tokens_for_any_messages(tokenizer, formatter: Formatter, turns) -> None:
    """Any texts, any roles in any order, system messages anywhere, more turns than the window."""
    chat = [{"role": ROLES.get(role, role), "content": text} for role, text in turns]
    kept = [Turn(role, text) for role, text in turns if role != "system"]
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)["input_ids"]
    assert ids == formatter.encode_prompt(kept, 10_000)


def test_pipeline_on_the_merged_export_replies_as_chat(exports: dict[str, Path], chat_reply: str) -> None:
    generate = pipeline("text-generation", model=str(exports["merged"]))
    (output,) = generate([{"role": "user", "content": MESSAGE}], tokenizer=generate.tokenizer)
    text = output["generated_text"][-1]["content"]
    cut = min((text.find(m) for m in MARKERS if m in text), default=None)
    assert cut is None or text[cut:] in MARKERS  # generation stopped at the marker (or at eos)
    assert extract_reply(text) == chat_reply and chat_reply


def test_generate_on_the_adapter_export_replies_as_chat(exports: dict[str, Path], tokenizer, chat_reply: str) -> None:
    """The model card's recipe for an adapter: plain peft, the export's generation config, the template."""
    directory = exports["adapter"]
    base = load_model(**checkpoint_file.read_export_meta(directory)["base"])  # a random_init base: rebuilt, as the card says
    model = PeftModel.from_pretrained(base, str(directory)).eval()
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": MESSAGE}], add_generation_prompt=True, return_tensors="pt")
    output = model.generate(**inputs, generation_config=GenerationConfig.from_pretrained(str(directory)), tokenizer=tokenizer)
    text = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert extract_reply(text) == chat_reply


@pytest.mark.parametrize("kind", ["adapter", "merged"])
def test_serve_answers_from_an_export_as_chat_does(exports: dict[str, Path], chat_reply: str, kind: str) -> None:
    loaded = trained_model.load(exports[kind], device="cpu")
    app = create_app(loaded, ServeConfig(kind, loaded.default_history_turns(), CrisisCheck()))
    with TestClient(app) as client:
        response = client.post("/v1/chat/completions", json={
            "model": kind, "seed": 0, "messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": MESSAGE}]})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == chat_reply


def test_the_card_reports_the_results_of_the_checkpoint_it_was_exported_from(tiny_ckpt: Path, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "lightning_logs"
    shutil.copytree(tiny_ckpt.parents[1], run / "version_0")
    ckpt = run / "version_0" / "checkpoints" / tiny_ckpt.name
    scored = {"stage": "test", "split": "test", "examples": 9, "generation_samples": 3, "checkpoint": str(ckpt),
              "metrics": {"test/ppl": 123.456, "test/bleu": 0.5}}
    (run / "version_1").mkdir()
    (run / "version_1" / "results.json").write_text(json.dumps(scored))
    other = {**scored, "checkpoint": str(run / "version_0" / "checkpoints" / "other.ckpt"), "metrics": {"test/ppl": 1.0}}
    (run / "version_2").mkdir()
    (run / "version_2" / "results.json").write_text(json.dumps(other))  # newer, but another checkpoint's
    card = (exporter.export(str(ckpt), str(tmp_path / "out")) / model_card.CARD_FILE).read_text()
    assert "| `test/ppl` | 123.5 |" in card and "| `test/bleu` | 0.5 |" in card and "9 examples" in card
