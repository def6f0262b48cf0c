"""Every bad input to train.py, and a bad flag of chat, export or plot, is answered with one
`error:` line naming the culprit, a non-zero exit and no traceback; nothing the user made is
touched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error, run_main, run_python
from shared_helpers import make_archive, official_layout, sample_data_dir, train_error

from empathic_lora.chat.repl import main as chat_main
from empathic_lora.data.raw_csv import SAMPLE_DIR
from empathic_lora.evaluate.plot_curves import main as plot_main
from empathic_lora.export.exporter import main as export_main
from empathic_lora.train.cli import main

HEADER = (SAMPLE_DIR / "train.csv").read_bytes().splitlines(keepends=True)[0]


# -- data ---------------------------------------------------------------------------------------
def test_missingsample_data_dir(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    line = train_error(capsys, tmp_path, "--data.data_dir", str(tmp_path / "nowhere"))
    assert line == f"error: --data.data_dir {tmp_path / 'nowhere'} does not exist (it should hold train.csv, valid.csv, test.csv)"


def test_data_dir_lacking_a_split(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    data = sample_data_dir(tmp_path)
    (data / "valid.csv").unlink()
    assert train_error(capsys, tmp_path, "--data.data_dir", str(data)) == f"error: --data.data_dir {data} lacks valid.csv"


def test_empty_split(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    data = sample_data_dir(tmp_path, valid=HEADER)
    assert train_error(capsys, tmp_path, "--data.data_dir", str(data)) == f"error: data file {data / 'valid.csv'} has a header but no rows"


def test_malformed_rows_beyond_the_tolerated_share(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    good = (SAMPLE_DIR / "train.csv").read_bytes()
    data = sample_data_dir(tmp_path, train=good + b"conv_x,not-a-number,sad\n" * 3)  # 3 of 199 lines: 1.5%
    line = train_error(capsys, tmp_path, "--data.data_dir", str(data))
    assert line == f"error: data file {data / 'train.csv'}: 3 of 199 lines are malformed (1.5%, more than 1%), the first at line 198"


def test_a_file_that_is_not_utf8(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    good = (SAMPLE_DIR / "valid.csv").read_bytes()
    data = sample_data_dir(tmp_path, valid=good.replace(b"I ", "\u00e9 ".encode("latin-1"), 1))  # Latin-1, not UTF-8
    line = train_error(capsys, tmp_path, "--data.data_dir", str(data))
    assert line.startswith(f"error: data file {data / 'valid.csv'} is not UTF-8 text (bad byte at offset ")


def _download(capsys: pytest.CaptureFixture, tmp_path: Path, url: str, sha256: str) -> str:
    return train_error(capsys, tmp_path, "--data.data_dir", "null", "--data.download_url", url,
                  "--data.download_sha256", sha256, "--data.cache_dir", str(tmp_path / "cache"))


def test_archive_with_the_wrong_hash(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    archive = tmp_path / "ed.tar.gz"
    actual = make_archive(archive, official_layout())
    line = _download(capsys, tmp_path, archive.as_uri(), "0" * 64)
    assert line == (f"error: the archive downloaded from {archive.as_uri()} has sha256 {actual}, expected {'0' * 64}; "
                    "it was deleted and not used")
    assert not list((tmp_path / "cache").rglob("*.csv")) and not list((tmp_path / "cache").rglob("*.tar.gz*"))


def test_a_cached_archive_is_verified_again(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    archive = tmp_path / "ed.tar.gz"
    sha = make_archive(archive, official_layout())
    cached = tmp_path / "cache" / "downloads" / f"empatheticdialogues-{sha[:16]}.tar.gz"
    cached.parent.mkdir(parents=True)
    make_archive(cached, {**official_layout(), "empatheticdialogues/extra.csv": "tampered"})
    # The cached copy does not match, so it is fetched again (here: unreachable) rather than used.
    line = _download(capsys, tmp_path, "http://127.0.0.1:9/ed.tar.gz", sha)
    assert line.startswith("error: could not download the EmpatheticDialogues archive from http://127.0.0.1:9/ed.tar.gz")
    assert not list((tmp_path / "cache").rglob("*.csv"))


@pytest.mark.parametrize(
    ("members", "link"),
    [
        ({**official_layout(), "../escaped.csv": "x"}, None),
        ({**official_layout(), "/tmp/empathic_lora_absolute_escape.csv": "x"}, None),
        (official_layout(), ("empatheticdialogues/evil", "/etc/passwd")),
    ],
    ids=["dotdot", "absolute", "symlink"],
)
def test_archive_member_escaping_the_target(capsys: pytest.CaptureFixture, tmp_path: Path, members: dict, link) -> None:
    archive = tmp_path / "ed.tar.gz"
    sha = make_archive(archive, members, link)
    line = _download(capsys, tmp_path, archive.as_uri(), sha)
    assert line.startswith(f"error: archive {tmp_path / 'cache' / 'downloads'}/") and "is unsafe or corrupt and was not extracted" in line
    assert not (tmp_path / "cache" / "escaped.csv").exists() and not Path("/tmp/empathic_lora_absolute_escape.csv").exists()
    assert not list((tmp_path / "cache").rglob("*.csv"))


# -- configuration ------------------------------------------------------------------------------
def test_unknown_key(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert train_error(capsys, tmp_path, "--model.rank", "8").startswith("error: unrecognized arguments: --model.rank 8")
    config = tmp_path / "mine.yaml"
    config.write_text("model:\n  rank: 8\n")
    assert train_error(capsys, tmp_path, "--config", str(config)).startswith("error: Subcommand 'fit' does not accept option 'model.rank'")


def test_wrong_type(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert train_error(capsys, tmp_path, "--model.r", "eight").startswith("error: --model.r: expected PositiveInt, got eight")
    assert train_error(capsys, tmp_path, "--trainer.max_epochs", "1.5").startswith(
        "error: --trainer.max_epochs: expected one of int, null, got 1.5")


# Every numeric knob with a value outside its range: refused while parsing, before anything loads.
OUT_OF_RANGE = [
    ("--model.r", "0", "expected PositiveInt (v>0), got 0"),
    ("--model.r", "-1", "expected PositiveInt (v>0), got -1"),
    ("--model.alpha", "0", "expected PositiveInt (v>0), got 0"),
    ("--model.dropout", "1.5", "expected ZeroToBelowOne (v>=0 and v<1), got 1.5"),
    ("--model.dropout", "1", "expected ZeroToBelowOne (v>=0 and v<1), got 1"),
    ("--model.dropout", "-0.1", "expected ZeroToBelowOne (v>=0 and v<1), got -0.1"),
    ("--model.lr", "-1", "expected PositiveFloat (v>0), got -1"),
    ("--model.lr", "0", "expected PositiveFloat (v>0), got 0"),
    ("--model.weight_decay", "-0.01", "expected NonNegativeFloat (v>=0), got -0.01"),
    ("--model.warmup_steps", "-10", "expected NonNegativeInt (v>=0), got -10"),
    ("--model.init_seed", "-1", "expected NonNegativeInt (v>=0), got -1"),
    ("--model.num_generation_samples", "-1", "expected one of NonNegativeInt, 'all', got -1"),
    ("--model.generation_every_n_epochs", "0", "expected one of PositiveInt, null, got 0"),
    ("--data.batch_size", "0", "expected PositiveInt (v>0), got 0"),
    ("--data.eval_batch_size", "-3", "expected PositiveInt (v>0), got -3"),
    ("--data.max_length", "3", "expected IntAtLeast8 (v>=8), got 3"),
    ("--data.history_turns", "-2", "expected one of NonNegativeInt, null, got -2"),
    ("--data.num_workers", "-1", "expected NonNegativeInt (v>=0), got -1"),
    ("--data.max_examples", "0", "expected one of PositiveInt, null, got 0"),
    ("--data.seed", "-1", "expected one of NonNegativeInt, null, got -1"),
]


@pytest.mark.parametrize(("flag", "value", "expected"), OUT_OF_RANGE, ids=[f"{f}={v}" for f, v, _ in OUT_OF_RANGE])
def test_a_knob_out_of_its_range(capsys: pytest.CaptureFixture, tmp_path: Path, flag: str, value: str, expected: str) -> None:
    assert train_error(capsys, tmp_path, flag, value).startswith(f"error: {flag}: {expected}")


@pytest.mark.parametrize(("flag", "value", "named"), [
    ("--trainer.max_epochs", "-5", "`max_epochs` must be a non-negative integer or -1. You passed in -5."),
    ("--trainer.accelerator", "mps", "`MPSAccelerator` can not run on your system"),  # never on Linux
    ("--trainer.devices", "0", "`Trainer(devices='0')` value is not a valid input"),
])
def test_a_trainer_setting_only_lightning_can_judge(
    capsys: pytest.CaptureFixture, tmp_path: Path, flag: str, value: str, named: str
) -> None:
    line = train_error(capsys, tmp_path, flag, value)
    assert line.startswith("error: ") and named in line, line


def test_the_ranges_show_in_help(tmp_path: Path) -> None:
    result = run_main(main, "fit", "--help")
    assert result.returncode == 0
    for shown in ("--model.r R", "PositiveInt", "--model.dropout DROPOUT", "ZeroToBelowOne", "IntAtLeast8"):
        assert shown in result.stdout, shown


def test_max_length_smaller_than_any_target(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert train_error(capsys, tmp_path, "--data.max_length", "8") == (
        "error: --data.max_length 8 is smaller than every target in the train split")


def test_target_modules_that_match_nothing(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert train_error(capsys, tmp_path, "--model.target_modules", "[q_proj]") == (
        "error: --model.target_modules ['q_proj'] match no module of the base model; "
        "its projection layers are: c_attn, c_fc, c_proj, lm_head")


def test_a_config_error_from_the_real_command_line_is_one_line(tmp_path: Path) -> None:
    result = run_python("train.py", "fit", "--config", "configs/tiny.yaml", "--data.batch_size", "eight")
    assert_one_line_error(result, "--data.batch_size: expected PositiveInt, got eight")
    assert "usage:" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("main_of", "argv", "named"), [
    (chat_main, ["--checkpoint", "x.ckpt", "--num_beams", "0"], "argument --num_beams: must be >= 1, got 0"),
    (export_main, ["--out", "somewhere"], "the following arguments are required: --checkpoint"),
    (plot_main, ["--smoothing", "lots"], "argument --smoothing: invalid float value: 'lots'"),
])
def test_a_bad_flag_of_chat_export_or_plot_is_one_line(capsys: pytest.CaptureFixture, main_of, argv, named) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit) as exit:
        main_of(argv)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and named in err and "usage:" not in err
    assert len(err.strip().splitlines()) == 1, err


# -- checkpoints (--ckpt_path) ------------------------------------------------------------------
def _changed(source: Path, path: Path, change) -> Path:  # noqa: ANN001
    checkpoint = torch.load(source, weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, path)
    return path


def test_bad_checkpoints(capsys: pytest.CaptureFixture, tmp_path: Path, tiny_ckpt: Path) -> None:
    original = hashlib.sha256(tiny_ckpt.read_bytes()).hexdigest()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(tiny_ckpt.read_bytes()[: tiny_ckpt.stat().st_size // 2])
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "epoch": 3}, foreign)  # a torch file, but not ours
    future = _changed(tiny_ckpt, tmp_path / "future.ckpt", lambda c: c["empathic_lora"].update(format_version=99))
    cases = {
        tmp_path / "missing.ckpt": f"error: checkpoint {tmp_path / 'missing.ckpt'} does not exist",
        truncated: f"error: checkpoint {truncated} is truncated or not a checkpoint (",
        text: f"error: checkpoint {text} is truncated or not a checkpoint (",
        foreign: f"error: {foreign} is not an empathic_lora checkpoint (no 'empathic_lora' section)",
        future: f"error: checkpoint {future} has format version 99, this empathic_lora reads version 1",
    }
    for path, expected in cases.items():
        assert train_error(capsys, tmp_path, "--ckpt_path", str(path)).startswith(expected)
    assert hashlib.sha256(tiny_ckpt.read_bytes()).hexdigest() == original


def test_checkpoint_for_another_base_model(capsys: pytest.CaptureFixture, tmp_path: Path, tiny_ckpt: Path) -> None:
    # As if the base at the recorded name had changed: another architecture behind the same name.
    other = _changed(tiny_ckpt, tmp_path / "other.ckpt", lambda c: c["empathic_lora"]["signature"].update(
        model_type="llama", hidden_size=576))
    # Found when Lightning loads it into the built model: the new run directory holds only its config.
    line = train_error(capsys, tmp_path, "--ckpt_path", str(other), writes_nothing=False)
    assert not list((tmp_path / "runs").rglob("*.ckpt"))
    assert line == ("error: the checkpoint was trained on base model 'builtin:tiny-gpt2', which differs from "
                    "'builtin:tiny-gpt2' (model_type llama vs gpt2, hidden_size 576 vs 64)")


# -- chat input (the chat tests cover the 1 MB line and invalid UTF-8) ---------------------------
def test_control_characters_and_ansi_escapes_in_chat_input_are_not_echoed(tiny_ckpt: Path) -> None:
    message = "I feel \x1b[31mred\x1b[0m and \x07 tired\x1b]0;title\x07"
    result = run_python("chat.py", "--checkpoint", str(tiny_ckpt),
                        input=f"{message}\n/\x1b[2Jclear\x08\x08\n/quit\n")
    assert result.returncode == 0, result.stderr
    for stream in (result.stdout, result.stderr):
        assert not any(c in stream for c in "\x1b\x07\x08"), repr(stream)
    assert "unknown command" in result.stderr


def _not_checkpoints(directory: Path) -> dict[str, Path]:
    """Files a user may hand over by mistake where a checkpoint is expected."""
    import zipfile

    directory.mkdir(parents=True, exist_ok=True)
    files = {name: directory / name for name in ("notes.txt", "random.bin", "empty.ckpt", "other.zip", "foreign.ckpt",
                                                  "not-a-dict.ckpt", "damaged.ckpt")}
    files["notes.txt"].write_text("hello, these are my notes\n")
    files["random.bin"].write_bytes(bytes(range(256)) * 20)
    files["empty.ckpt"].write_bytes(b"")
    with zipfile.ZipFile(files["other.zip"], "w") as archive:
        archive.writestr("readme.txt", "not a torch file")
    torch.save({"state_dict": {}, "epoch": 3}, files["foreign.ckpt"])
    torch.save({"empathic_lora": 5}, files["not-a-dict.ckpt"])
    torch.save({"empathic_lora": {"format_version": 1}}, files["damaged.ckpt"])
    files["no-checkpoint-dir"] = directory / "empty-dir"
    files["no-checkpoint-dir"].mkdir(exist_ok=True)
    return files


NOT_CHECKPOINTS = ["notes.txt", "random.bin", "empty.ckpt", "other.zip", "foreign.ckpt", "not-a-dict.ckpt", "damaged.ckpt",
                   "no-checkpoint-dir"]


@pytest.mark.parametrize("name", NOT_CHECKPOINTS)
@pytest.mark.parametrize("entry", ["train", "chat", "export"])
def test_anything_that_is_not_a_checkpoint_is_one_line_everywhere(
    capsys: pytest.CaptureFixture, tmp_path: Path, entry: str, name: str
) -> None:
    path = _not_checkpoints(tmp_path / "given")[name]
    if entry == "train":
        line = train_error(capsys, tmp_path, "--ckpt_path", str(path))
    else:
        capsys.readouterr()
        out = tmp_path / "export-out"
        with pytest.raises(SystemExit) as exit_:
            if entry == "chat":
                chat_main(["--checkpoint", str(path), "--message", "hello"])
            else:
                export_main(["--checkpoint", str(path), "--out", str(out)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "Traceback" not in err, err
        line = err.strip().splitlines()[-1]
        assert [x for x in err.splitlines() if x.startswith("error:")] == [line], err
        assert not out.exists()
    assert line.startswith("error: ") and str(path) in line, line
