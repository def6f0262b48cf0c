"""Export: a standard PEFT adapter directory and a merged model directory, both loadable by plain
transformers + peft and by chat.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_python
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from empathic_lora.chat import repl
from empathic_lora.conversation import MARKERS, Formatter, Turn
from empathic_lora.errors import UserError
from empathic_lora.export import exporter
from empathic_lora.lm import checkpoint_file, pretrained
from empathic_lora.lm.adapted_model import AdaptedModel
from empathic_lora.lm.decoding import GenerationSettings, generate_replies
from empathic_lora.session import trained_model

TEXT = " <|prompt|> I feel overwhelmed with work <|response|> That sounds hard"


@pytest.fixture(scope="module")
def trained(tiny_ckpt: Path) -> AdaptedModel:
    return trained_model.load_checkpoint(tiny_ckpt)[0]


@pytest.fixture(scope="module")
def adapter_dir(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exporter.export(str(tiny_ckpt), str(tmp_path_factory.mktemp("export") / "adapter"))


@pytest.fixture(scope="module")
def merged_dir(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exporter.export(str(tiny_ckpt), str(tmp_path_factory.mktemp("export") / "merged"), merge=True)


@torch.no_grad()
def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits


def test_adapter_loads_in_plain_peft_with_the_same_logits(adapter_dir: Path, trained: AdaptedModel) -> None:
    names = {p.name for p in adapter_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", checkpoint_file.EXPORT_META} <= names
    meta = json.loads((adapter_dir / checkpoint_file.EXPORT_META).read_text())
    # A random_init base has no weights anywhere: it is rebuilt from the recorded seed, as documented.
    backbone = pretrained.load_model(**meta["base"])
    model = PeftModel.from_pretrained(backbone, str(adapter_dir)).eval()
    ids = AutoTokenizer.from_pretrained(str(adapter_dir))(TEXT, return_tensors="pt")["input_ids"]
    expected = _logits(trained.model, ids)
    assert torch.allclose(_logits(model, ids), expected, atol=1e-5)
    with model.disable_adapter():
        assert not torch.allclose(_logits(model, ids), expected, atol=1e-3)  # the adapter is not a no-op


def test_merged_model_loads_with_auto_model(merged_dir: Path, trained: AdaptedModel) -> None:
    model = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
    assert not any("lora" in name for name, _ in model.named_parameters())
    ids = AutoTokenizer.from_pretrained(str(merged_dir))(TEXT, return_tensors="pt")["input_ids"]
    assert torch.allclose(_logits(model, ids), _logits(trained.model, ids), atol=1e-4)


def test_chat_from_the_adapter_directory_replies_as_from_the_checkpoint(
    adapter_dir: Path, tiny_ckpt: Path, capsys: pytest.CaptureFixture
) -> None:
    settings = GenerationSettings(max_new_tokens=16)
    replies = []
    for source in (tiny_ckpt, adapter_dir):
        loaded = trained_model.load(source, device="cpu")
        formatter = Formatter(loaded.tokenizer, loaded.default_history_turns())
        replies.append(generate_replies(loaded.model, formatter, [[Turn("speaker", "I lost my keys")]], settings)[0])
    assert replies[0] == replies[1] and replies[0]
    repl.main(["--checkpoint", str(adapter_dir), "--message", "I feel overwhelmed with work", "--device", "cpu"])
    (line,) = capsys.readouterr().out.splitlines()
    assert line.strip() and not any(marker in line for marker in MARKERS)


def test_chat_from_the_merged_directory_through_a_pipe(merged_dir: Path) -> None:
    result = run_python("chat.py", "--checkpoint", str(merged_dir), input="I feel overwhelmed with work\n/quit\n")
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert line.strip() and line != repl.NO_REPLY and not any(marker in line for marker in MARKERS)


def test_a_non_empty_out_is_refused_unless_forced(tmp_path: Path, tiny_ckpt: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit:
        exporter.main(["--checkpoint", str(tiny_ckpt), "--out", str(out)])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {out} is not empty; pass --force") and "Traceback" not in err
    assert {p.name for p in out.iterdir()} == {"notes.txt"}

    exporter.main(["--checkpoint", str(tiny_ckpt), "--out", str(out), "--force"])
    exporter.main(["--checkpoint", str(tiny_ckpt), "--out", str(out), "--force", "--merge"])
    names = {p.name for p in out.iterdir()}
    assert "notes.txt" in names and "model.safetensors" in names
    assert "adapter_model.safetensors" not in names  # the previous export is replaced, not mixed in
    assert (out / "notes.txt").read_text() == "mine"
    assert isinstance(trained_model.load(out, device="cpu").model, type(AutoModelForCausalLM.from_pretrained(str(out))))
    with pytest.raises(UserError, match="already an export"):
        exporter.export(str(out), str(tmp_path / "again"))


def test_a_tampered_adapter_is_refused(adapter_dir: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for path in adapter_dir.iterdir():
        (tampered / path.name).write_bytes(path.read_bytes())
    weights = load_file(str(adapter_dir / checkpoint_file.ADAPTER_WEIGHTS))
    weights.pop(sorted(weights)[0])
    save_file(weights, str(tampered / checkpoint_file.ADAPTER_WEIGHTS))
    with pytest.raises(UserError, match="1 adapter weight"):
        trained_model.load(tampered, device="cpu")


def test_an_adapter_on_another_base_is_refused_naming_both(adapter_dir: Path, distilgpt2_dir: Path) -> None:
    with pytest.raises(UserError, match=f"'builtin:tiny-gpt2', which differs from '{distilgpt2_dir}'"):
        trained_model.load(adapter_dir, base_model=str(distilgpt2_dir), device="cpu")


def test_a_merged_gguf_base_is_a_plain_float_model(tmp_path: Path, smollm2_run: Path) -> None:
    """The GGUF file is dequantized on load; the merged export must be an ordinary float model that
    plain transformers loads with the trained logits, and that chat uses."""
    root = smollm2_run
    out = exporter.export(str(root), str(tmp_path / "merged"), merge=True)
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    module = trained_model.load_checkpoint(trained_model.resolve(root))[0]
    plain = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = module.tokenizer(TEXT, return_tensors="pt")["input_ids"]
    torch.testing.assert_close(_logits(plain, ids), _logits(module.model, ids), atol=1e-4, rtol=0)
    chat = run_python("chat.py", "--checkpoint", str(out), "--message", "I feel overwhelmed with work", "--max_new_tokens", "8")
    assert chat.returncode == 0 and chat.stdout.strip(), chat.stderr[-2000:]
