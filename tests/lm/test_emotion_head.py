"""The optional emotion head: labels reach the batches, loss = LM + W x CE, W = 0 is the reference
recipe, the head survives checkpoint, exact resume and export, chat shows it, and validate/test
score it (tiny GPT-2 on the shipped sample)."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from shared_helpers import sample_data_dir, train_error

from empathic_lora.chat import repl
from empathic_lora.data import emotion_labels
from empathic_lora.data.datamodule import EmpatheticDialoguesDataModule
from empathic_lora.data.raw_csv import SAMPLE_DIR
from empathic_lora.evaluate.results_file import RESULTS_FILE
from empathic_lora.export import exporter
from empathic_lora.lm import checkpoint_file, emotion_classifier
from empathic_lora.lm.checkpoint_file import META_KEY
from empathic_lora.lm.decoding import GenerationSettings
from empathic_lora.lm.pretrained import load_tokenizer
from empathic_lora.safety.crisis_check import CrisisCheck
from empathic_lora.session import trained_model
from empathic_lora.session.conversation_state import Conversation
from empathic_lora.train.cli import find_last_checkpoint, main
from empathic_lora.train.lora_module import EmpatheticLoRAModule

TINY = "builtin:tiny-gpt2"
# A schedule that does not depend on max_steps, so a run stopped early follows the uninterrupted one's rates.
FIT = ["fit", "--config", "configs/tiny.yaml", "--model.scheduler", "constant", "--model.warmup_steps", "10",
       "--model.num_generation_samples", "0", "--trainer.enable_progress_bar", "false",
       "--trainer.enable_model_summary", "false", "--trainer.num_sanity_val_steps", "0",
       "--trainer.limit_val_batches", "1", "--trainer.callbacks.every_n_train_steps", "1"]
HEAD = ["--model.emotion_loss_weight", "0.5"]


def _fit(root: Path, *extra: str) -> Path:
    main([*FIT, "--trainer.default_root_dir", str(root), *extra])
    return Path(find_last_checkpoint(str(root)))


@pytest.fixture(scope="module")
def data() -> EmpatheticDialoguesDataModule:
    module = EmpatheticDialoguesDataModule("builtin:sample", batch_size=8, group_by_length=False, tokenizer=load_tokenizer(TINY))
    module.setup()
    return module


@pytest.fixture(scope="module")
def batch(data: EmpatheticDialoguesDataModule) -> dict[str, torch.Tensor]:
    return next(iter(data.train_dataloader()))


@pytest.fixture(scope="module")
def head_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four steps with the head on, uninterrupted."""
    return _fit(tmp_path_factory.mktemp("head"), *HEAD, "--trainer.max_steps", "4")


def _module(weight: float) -> EmpatheticLoRAModule:
    torch.manual_seed(0)
    return EmpatheticLoRAModule(TINY, random_init=True, emotion_loss_weight=weight).eval()  # eval: no dropout draws


def test_labels_reach_batches_in_the_fixed_order(data: EmpatheticDialoguesDataModule, batch: dict) -> None:
    assert list(emotion_labels.EMOTIONS) == sorted(emotion_labels.EMOTIONS) and len(emotion_labels.EMOTIONS) == 32
    # The hand-written sample holds every one of the 32 labels, so each class is exercised.
    assert {e.emotion for split in ("train", "val", "test") for e in data.examples(split)} == set(emotion_labels.EMOTIONS)
    table = data.datasets["train"]
    expected = [emotion_labels.EMOTIONS.index(data.examples("train")[i].emotion) for i in table["example_index"]]
    assert table["emotion"] == expected
    items = [table[i] for i in range(5)]
    assert data._collator()(items)["emotion"].tolist() == expected[:5]
    assert batch["emotion"].dtype == torch.long and batch["emotion"].shape == (batch["input_ids"].shape[0],)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # no Trainer here, nothing to log to
@pytest.mark.parametrize("supervised_head", [True, False], ids=["supervised-only head", "full forward"])
def test_loss_is_lm_loss_plus_weighted_emotion_cross_entropy(batch: dict, supervised_head: bool) -> None:
    module = _module(0.5)
    if not supervised_head:  # the fallback for families whose forward changes the logits
        module.supervised_head = None
    with torch.no_grad():
        output = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
        lm = F.cross_entropy(output.logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten())
        # The cue is the last prompt token: one before the first supervised label.
        cue = torch.tensor([int((row != -100).nonzero()[0]) - 1 for row in batch["labels"]])
        states = output.hidden_states[-1][torch.arange(len(cue)), cue]
        expected = lm + 0.5 * F.cross_entropy(module.emotion_head(states), batch["emotion"])
        torch.testing.assert_close(module.training_step(batch, 0), expected)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_weight_zero_is_the_reference_recipe(batch: dict) -> None:
    module = _module(0.0)
    assert module.emotion_head is None
    assert all(key.startswith("model.") and "lora_" in key for key in module.trainable_state_keys())
    with torch.no_grad():
        logits, targets = module.supervised_logits(batch)
        plain = {k: v for k, v in batch.items() if k != "emotion"}
        assert torch.equal(module.training_step(batch, 0), F.cross_entropy(logits, targets))
        assert torch.equal(module.training_step(batch, 0), module.training_step(plain, 0))


def test_checkpoint_and_exact_resume_keep_the_head(tmp_path: Path, head_ckpt: Path) -> None:
    uninterrupted = torch.load(head_ckpt, weights_only=True)
    assert {"emotion_head.weight", "emotion_head.bias"} <= set(uninterrupted["state_dict"])
    assert uninterrupted[META_KEY]["emotions"] == list(emotion_labels.EMOTIONS)
    _fit(tmp_path, *HEAD, "--trainer.max_steps", "2")
    resumed = torch.load(_fit(tmp_path, *HEAD, "--trainer.max_steps", "4", "--ckpt_path", "last"), weights_only=True)
    assert resumed["global_step"] == uninterrupted["global_step"] == 4
    assert resumed["state_dict"].keys() == uninterrupted["state_dict"].keys()
    for key, value in uninterrupted["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, atol=1e-6, rtol=0, msg=key)
    start = _module(0.5).emotion_head.weight
    assert not torch.allclose(uninterrupted["state_dict"]["emotion_head.weight"], start)  # it trained


def test_off_leaves_the_checkpoint_as_before_and_chat_refuses_show_emotion(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt = torch.load(last := _fit(tmp_path, "--trainer.max_steps", "1"), weights_only=True)
    assert not any("emotion" in key for key in ckpt["state_dict"]) and "emotions" not in ckpt[META_KEY]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        repl.main(["--checkpoint", str(last), "--message", "hello", "--show_emotion"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and err[-1].startswith("error: --show_emotion:") and "no emotion head" in err[-1]


def test_test_logs_emotion_metrics_and_the_majority_baseline(tmp_path: Path, head_ckpt: Path) -> None:
    main(["test", "--config", "configs/tiny.yaml", "--ckpt_path", str(head_ckpt), "--model.num_generation_samples", "0",
          "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)])
    metrics = json.loads((tmp_path / "lightning_logs" / "version_0" / RESULTS_FILE).read_text())["metrics"]
    labels = [e.emotion for e in EmpatheticDialoguesDataModule("builtin:sample").examples("test")]
    assert metrics["test/emotion_majority"] == pytest.approx(max(Counter(labels).values()) / len(labels))
    assert 0 <= metrics["test/emotion_f1"] <= metrics["test/emotion_acc"] + 1 and 0 <= metrics["test/emotion_acc"] <= 1


@pytest.mark.parametrize("merge", [False, True], ids=["adapter", "merged"])
def test_export_carries_the_head_and_chat_shows_it(tmp_path: Path, head_ckpt: Path, merge: bool, capsys: pytest.CaptureFixture) -> None:
    out = exporter.export(str(head_ckpt), str(tmp_path / "out"), merge=merge)
    assert (out / emotion_classifier.HEAD_FILE).is_file()
    assert emotion_classifier.HEAD_FILE in json.loads((out / checkpoint_file.EXPORT_META).read_text())["files"]
    from_ckpt, exported = trained_model.load(head_ckpt, device="cpu"), trained_model.load(out, device="cpu")
    settings = GenerationSettings(max_new_tokens=4)
    sessions = [Conversation(m, settings, 4, CrisisCheck([])) for m in (from_ckpt, exported)]
    reading = sessions[1].emotion("my dog died this morning")
    assert reading.startswith("(sounds: ") and reading == sessions[0].emotion("my dog died this morning")
    assert reading.split()[1] in emotion_labels.EMOTIONS
    capsys.readouterr()
    repl.main(["--checkpoint", str(out), "--message", "my dog died this morning", "--show_emotion", "--max_new_tokens", "4"])
    assert capsys.readouterr().out.splitlines()[0] == reading  # the reading comes before the reply
    notes = io.StringIO()
    repl.converse(sessions[1], ["/emotion", "my dog died this morning", "/emotion"], notes, interactive=True)
    lines = notes.getvalue().splitlines()
    assert lines[0] == "no conversation yet" and lines[-1].startswith("(sounds: ")


def test_a_negative_weight_is_one_line(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    line = train_error(capsys, tmp_path, "--model.emotion_loss_weight", "-0.5")
    assert line.startswith("error: --model.emotion_loss_weight: expected NonNegativeFloat (v>=0), got -0.5")


def test_a_label_outside_the_32_is_one_line(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    train = (SAMPLE_DIR / "train.csv").read_bytes().replace(b",afraid,", b",bored,")
    line = train_error(capsys, tmp_path, "--data.data_dir", str(sample_data_dir(tmp_path, train=train)), writes_nothing=False)
    assert "train.csv" in line and "'bored'" in line


def test_the_head_has_its_own_learning_rate_and_the_schedule_scales_both(tmp_path: Path) -> None:
    module = EmpatheticLoRAModule(TINY, random_init=True, emotion_loss_weight=0.5, lr=1e-3, emotion_lr=5e-2,
                                  warmup_steps=2, scheduler="linear")
    module.trainer = SimpleNamespace(estimated_stepping_batches=10)  # all configure_optimizers reads
    optimizers = module.configure_optimizers()
    optimizer, schedule = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    adapter, head = optimizer.param_groups
    assert {id(p) for p in head["params"]} == {id(p) for p in module.emotion_head.parameters()}
    assert not {id(p) for p in adapter["params"]} & {id(p) for p in head["params"]}
    assert len(adapter["params"]) == sum(p.requires_grad for p in module.model.parameters())
    schedule.step()  # step 1 of 2 warm-up steps: half of each group's own rate
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([5e-4, 2.5e-2])


def test_the_head_follows_lr_unless_told_and_a_head_rate_without_a_head_is_one_line(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    module = EmpatheticLoRAModule(TINY, random_init=True, emotion_loss_weight=0.5, lr=2e-3)
    module.trainer = SimpleNamespace(estimated_stepping_batches=10)
    assert [g["lr"] for g in module.configure_optimizers()["optimizer"].param_groups] == [2e-3, 2e-3]
    line = train_error(capsys, tmp_path, "--model.emotion_lr", "0.01")
    assert line.startswith("error: --model.emotion_lr 0.01 sets the emotion head's learning rate, but there is no head")



@pytest.mark.parametrize("peft", [None, {"class_path": "peft.PromptTuningConfig", "init_args": {"num_virtual_tokens": 4}}],
                         ids=["lora", "prompt_tuning"])
def test_chat_reads_the_head_from_the_state_training_fed_it(batch: dict[str, torch.Tensor], peft: dict | None) -> None:
    """Prompt tuning's virtual tokens come first in training's forward; chat's read-out must see them too."""
    torch.manual_seed(0)
    module = EmpatheticLoRAModule(TINY, random_init=True, emotion_loss_weight=0.5, peft=peft).eval()
    if peft is not None:  # a trained prompt, not PEFT's initial one, so that the virtual tokens matter
        module.model.prompt_encoder.default.embedding.weight.data.normal_()
    row = {k: v[:1] for k, v in batch.items()}
    width = int(row["attention_mask"].sum())
    row = {k: (v[:, :width] if v.dim() == 2 else v) for k, v in row.items()}
    with torch.no_grad():
        _, _, cue = module.forward_batch(row)
        trained = module.emotion_head(cue)[0].softmax(-1)
    prompt = row["input_ids"][0, : int(emotion_classifier.cue_positions(row["labels"])[0]) + 1].tolist()
    torch.testing.assert_close(emotion_classifier.probabilities(module.model, module.emotion_head, prompt), trained, atol=1e-5, rtol=0)
