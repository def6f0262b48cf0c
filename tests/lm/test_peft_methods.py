"""Every supported PEFT method trains with the model's own loss, resumes exactly, exports (merged
where it can be), chats and evaluates, on the tiny model; the method configs parse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import ROOT, assert_one_line_error, run_main
from peft import LoraConfig, PeftModel
from shared_helpers import lightning_module

from empathic_lora.chat import repl
from empathic_lora.conversation import Formatter, Turn
from empathic_lora.data.datamodule import EmpatheticDialoguesDataModule
from empathic_lora.errors import UserError
from empathic_lora.export import exporter
from empathic_lora.lm import checkpoint_file, pretrained
from empathic_lora.lm.decoding import GenerationSettings, generate_replies
from empathic_lora.session import trained_model
from empathic_lora.train.cli import main
from empathic_lora.train.lora_module import EmpatheticLoRAModule

# None: the flat LoRA flags of configs/tiny.yaml. The others reset the flags tiny.yaml changes (r,
# target_modules), as --model.peft requires, and set their own in init_args.
METHODS: dict[str, dict | None] = {
    "lora": None,
    "dora": {"class_path": "peft.LoraConfig", "init_args": {"r": 4, "lora_alpha": 8, "use_dora": True}},
    "rslora": {"class_path": "peft.LoraConfig", "init_args": {"r": 4, "lora_alpha": 8, "use_rslora": True}},
    "pissa": {"class_path": "peft.LoraConfig", "init_args": {"r": 4, "lora_alpha": 4, "init_lora_weights": "pissa"}},
    "ia3": {"class_path": "peft.IA3Config"},
    "prompt_tuning": {"class_path": "peft.PromptTuningConfig", "init_args": {"num_virtual_tokens": 4}},
}
MERGEABLE = {"lora", "dora", "rslora", "pissa", "ia3"}
RESUME_AT, STEPS = 2, 3
MESSAGE = [Turn("speaker", "I lost my keys")]


def _args(root: Path, method: str, *extra: str) -> list[str]:
    peft = METHODS[method]
    method_args = [] if peft is None else ["--model.r", "8", "--model.target_modules", "null", "--model.peft", json.dumps(peft)]
    # A schedule that does not depend on max_steps, so the stopped run follows the uninterrupted
    # one's learning rates; validation on one batch, generation off (the test run turns it on).
    return [
        "fit", "--config", "configs/tiny.yaml", *method_args, "--model.scheduler", "constant",
        "--model.num_generation_samples", "0", "--trainer.limit_val_batches", "1",
        "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(root), *extra,
    ]


def _last(root: Path, version: int) -> Path:
    return root / "lightning_logs" / f"version_{version}" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module", params=list(METHODS))
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One method: an uninterrupted fit of STEPS steps, one stopped at RESUME_AT and resumed, its exports."""
    method = request.param
    whole, resumed = tmp_path_factory.mktemp(f"{method}-whole"), tmp_path_factory.mktemp(f"{method}-resumed")
    main(_args(whole, method, "--trainer.max_steps", str(STEPS)))
    main(_args(resumed, method, "--trainer.max_steps", str(RESUME_AT)))
    main(_args(resumed, method, "--trainer.max_steps", str(STEPS), "--ckpt_path", "last"))
    ckpt = _last(whole, 0)
    exports = tmp_path_factory.mktemp(f"{method}-export")
    adapter = exporter.export(str(ckpt), str(exports / "adapter"))
    merged = exporter.export(str(ckpt), str(exports / "merged"), merge=True) if method in MERGEABLE else None
    return {"method": method, "ckpt": ckpt, "resumed": _last(resumed, 1), "adapter": adapter, "merged": merged, "root": whole}


def _batch(module: EmpatheticLoRAModule) -> dict[str, torch.Tensor]:
    data = EmpatheticDialoguesDataModule("builtin:sample", format="dialogue", max_length=64, batch_size=4, tokenizer=module.tokenizer)
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def _prompt(module: EmpatheticLoRAModule) -> torch.Tensor:
    return torch.tensor([Formatter(module.tokenizer, None).encode_prompt(MESSAGE, 100)])


@torch.no_grad()
def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits[:, -ids.shape[1] :]


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # no Trainer here, nothing to log to
def test_training_loss_is_the_models_own_full_forward_loss(run: dict) -> None:
    module = lightning_module(run["ckpt"]).train()  # trained: the adapter is no longer a no-op
    batch = _batch(module)
    torch.manual_seed(0)  # the same dropout masks for both
    loss = module.training_step(batch, 0)
    torch.manual_seed(0)
    logits = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = logits[:, -batch["input_ids"].shape[1] :]  # prompt tuning returns its virtual tokens' logits first
    full = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten())
    torch.testing.assert_close(loss, full, atol=1e-5, rtol=0)
    # Only prompt tuning needs the full forward; the others keep the supervised-only head.
    assert (module.supervised_head is None) == (run["method"] == "prompt_tuning")


def test_a_resumed_run_ends_with_the_uninterrupted_runs_weights(run: dict) -> None:
    whole, resumed = (torch.load(path, weights_only=True) for path in (run["ckpt"], run["resumed"]))
    assert whole["global_step"] == resumed["global_step"] == STEPS
    assert whole["state_dict"].keys() == resumed["state_dict"].keys() and whole["state_dict"]
    for key, value in whole["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, atol=1e-6, rtol=0, msg=key)


def test_exports_load_with_plain_peft_and_transformers_to_the_trained_model(run: dict) -> None:
    trained = trained_model.load_checkpoint(run["ckpt"])[0]
    ids = _prompt(trained)
    expected = _logits(trained.model, ids)
    meta = json.loads((run["adapter"] / checkpoint_file.EXPORT_META).read_text())
    plain = PeftModel.from_pretrained(pretrained.load_model(**meta["base"]), str(run["adapter"])).eval()
    torch.testing.assert_close(_logits(plain, ids), expected, atol=1e-4, rtol=0)
    with plain.disable_adapter():
        # Trained, not a no-op (IA3's vectors move least in three steps: about 1e-4 of the logits).
        assert (_logits(plain, ids) - expected).abs().max() > 1e-5
    if run["merged"] is not None:
        merged = trained_model.load(run["merged"], device="cpu").model
        assert not isinstance(merged, PeftModel)
        torch.testing.assert_close(_logits(merged, ids), expected, atol=1e-4, rtol=0)


def test_merge_is_a_one_line_error_where_the_method_cannot_merge(run: dict, tmp_path: Path) -> None:
    if run["method"] in MERGEABLE:
        assert (run["merged"] / "model.safetensors").is_file()
        return
    result = run_main(exporter.main, "--checkpoint", str(run["ckpt"]), "--out", str(tmp_path / "m"), "--merge")
    assert_one_line_error(result, "--merge", "nothing to merge", "without --merge")
    assert not (tmp_path / "m").exists()


def test_chat_replies_the_same_from_the_checkpoint_and_the_export(run: dict, capsys: pytest.CaptureFixture) -> None:
    settings = GenerationSettings(max_new_tokens=8)
    replies = []
    for source in (run["ckpt"], run["adapter"]):
        loaded = trained_model.load(source, device="cpu")
        replies.append(generate_replies(loaded.model, Formatter(loaded.tokenizer, loaded.default_history_turns()), [MESSAGE], settings)[0])
    assert replies[0] == replies[1]
    repl.main(["--checkpoint", str(run["adapter"]), "--message", "I lost my keys", "--device", "cpu", "--max_new_tokens", "8"])
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_evaluation_scores_the_method(run: dict, tmp_path: Path) -> None:
    main(["test", "--config", "configs/tiny.yaml", "--ckpt_path", str(run["ckpt"]), "--model.num_generation_samples", "2",
          "--model.generation", '{"max_new_tokens": 4}', "--trainer.limit_test_batches", "1",
          "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)])
    (results,) = tmp_path.glob("lightning_logs/version_*/results.json")
    metrics = json.loads(results.read_text())["metrics"]
    assert 1 < metrics["test/ppl"] < 1e6 and 1 < metrics["test/word_ppl"] and "test/distinct1" in metrics


def test_a_flat_lora_flag_beside_peft_is_a_one_line_error(tmp_path: Path) -> None:
    result = run_main(main, "fit", "--config", "configs/tiny.yaml", "--model.peft", "peft.IA3Config",
                        "--trainer.default_root_dir", str(tmp_path))
    assert_one_line_error(result, "--model.r 16", "--model.peft (IA3Config)", "init_args")


def test_pissa_fingerprints_the_untouched_base_and_initialises_on_bfloat16() -> None:
    """PiSSA's SVD differs in the last bits with the thread count: the checkpoint's base signature
    must be of the weights as loaded. On a bfloat16 base the model starts as the base does."""
    targets = ["c_attn", "c_proj", "c_fc"]
    plain = EmpatheticLoRAModule("builtin:tiny-gpt2", random_init=True, dtype="bfloat16", target_modules=targets)
    pissa = EmpatheticLoRAModule(
        "builtin:tiny-gpt2", random_init=True, dtype="bfloat16",
        peft=LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights="pissa"),
    )
    assert pissa.base_signature == plain.base_signature
    assert pissa.hparams["peft"]["init_args"]["init_lora_weights"] == "pissa"  # plain values: weights_only loads it
    layer = pissa.model.get_base_model().transformer.h[0].attn.c_attn
    assert layer.base_layer.weight.dtype == torch.bfloat16 and layer.lora_A["default"].weight.dtype == torch.float32
    assert not torch.equal(layer.base_layer.weight, plain.model.get_base_model().transformer.h[0].attn.c_attn.base_layer.weight)
    ids = _prompt(plain)
    torch.testing.assert_close(_logits(pissa.model.eval(), ids).float(), _logits(plain.model.eval(), ids).float(), atol=0.05, rtol=0)
    with pytest.raises(UserError, match="zero_shot"):
        EmpatheticLoRAModule("builtin:tiny-gpt2", random_init=True, peft=pissa.peft_config, zero_shot=True)


@pytest.mark.parametrize("config", sorted((ROOT / "configs" / "methods").glob("*.yaml")), ids=lambda p: p.stem)
def test_method_configs_parse_and_comment_every_key(config: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:  # in-process: parsing is all --print_config does
        main(["fit", "--config", str(config), "--print_config"])
    out, err = capsys.readouterr()
    assert exit_.value.code in (0, None), err[-2000:]
    printed = yaml.safe_load(out)["model"]
    assert printed["base_model"] == "builtin:smollm2-135m-instruct"
    lines = [line for line in config.read_text().splitlines() if line.strip() and not line.lstrip().startswith(("#", "- ")) and not line.endswith(":")]
    assert all("#" in line for line in lines), [line for line in lines if "#" not in line]


def test_every_method_has_a_config() -> None:
    assert {p.stem for p in (ROOT / "configs" / "methods").glob("*.yaml")} == set(METHODS)


def test_prompt_tuning_generates_unpadded(monkeypatch: pytest.MonkeyPatch) -> None:
    """PEFT ignores position ids under prompt tuning, so a left-padded prompt would be answered at
    shifted positions: its replies are generated one context at a time, the others' in a batch."""
    from empathic_lora.lm import decoding

    contexts = [MESSAGE, [Turn("speaker", "My dog is sick and I have been at the vet all day")]]
    real = decoding._generate
    for peft, widths in ((None, [2]), ({"class_path": "peft.PromptTuningConfig", "init_args": {"num_virtual_tokens": 4}}, [1, 1])):
        module = EmpatheticLoRAModule("builtin:tiny-gpt2", random_init=True, peft=peft).eval()
        calls: list[int] = []
        monkeypatch.setattr(decoding, "_generate", lambda model, formatter, batch, *rest: calls.append(len(batch)) or real(model, formatter, batch, *rest))
        replies = generate_replies(module.model, Formatter(module.tokenizer, None), contexts, GenerationSettings(max_new_tokens=2))
        assert calls == widths and len(replies) == 2


def test_virtual_tokens_past_the_context_window_are_a_one_line_error(tmp_path: Path) -> None:
    peft = json.dumps({"class_path": "peft.PromptTuningConfig", "init_args": {"num_virtual_tokens": 200}})
    result = run_main(main, "fit", "--config", "configs/tiny.yaml", "--model.r", "8", "--model.target_modules", "null",
                        "--model.peft", peft, "--trainer.default_root_dir", str(tmp_path))  # tiny: 256 positions
    assert_one_line_error(result, "--data.max_length 128", "200 virtual tokens", "256")
