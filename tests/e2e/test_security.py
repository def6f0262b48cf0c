"""A file from a stranger never runs code: checkpoints are unpickled with `weights_only=True`
through every entry point, model directories never bring their own code, archives are extracted
with the `data` filter after their sha256 is checked."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import ROOT, assert_one_line_error, run_main

from empathic_lora.chat import repl
from empathic_lora.errors import UserError
from empathic_lora.export import exporter
from empathic_lora.lm import checkpoint_file
from empathic_lora.train import cli

SOURCES = sorted([*(ROOT / "empathic_lora").rglob("*.py"), ROOT / "train.py", ROOT / "chat.py"])


class _CreatesAFile:
    """Unpickling this calls open(path, "w"): the file appearing would prove that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (str(self.path), "w"))


@pytest.fixture
def malicious(tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint that looks like ours in every other way, and its would-be victim file."""
    marker = tmp_path / "code-ran"
    path = tmp_path / "gift.ckpt"
    torch.save({
        "state_dict": {}, "hyper_parameters": {"base_model": "builtin:tiny-gpt2"},
        checkpoint_file.META_KEY: {"format_version": checkpoint_file.FORMAT_VERSION, "payload": _CreatesAFile(marker)},
    }, path)
    return path, marker


REFUSED = "was refused: loading it would call io.open, which could run code"


def test_reading_refuses_it(malicious: tuple[Path, Path]) -> None:
    path, marker = malicious
    with pytest.raises(UserError, match=REFUSED):
        checkpoint_file.read(path)
    assert not marker.exists()


def test_train_refuses_it(malicious: tuple[Path, Path], tmp_path: Path) -> None:
    path, marker = malicious
    result = run_main(cli.main, "fit", "--config", "configs/tiny.yaml", "--ckpt_path", str(path),
                        "--trainer.default_root_dir", str(tmp_path / "runs"))
    assert_one_line_error(result, f"checkpoint {path} {REFUSED}")
    assert not marker.exists() and not (tmp_path / "runs").exists()


def test_chat_refuses_it(malicious: tuple[Path, Path]) -> None:
    path, marker = malicious
    result = run_main(repl.main, "--checkpoint", str(path), "--message", "hello")
    assert_one_line_error(result, f"checkpoint {path} {REFUSED}")
    assert not marker.exists() and result.stdout == ""


def test_export_refuses_it(malicious: tuple[Path, Path], tmp_path: Path) -> None:
    path, marker = malicious
    result = run_main(exporter.main, "--checkpoint", str(path), "--out", str(tmp_path / "out"))
    assert_one_line_error(result, f"checkpoint {path} {REFUSED}")
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("model_type", ["gpt2", "custom"])
def test_a_model_directory_never_runs_its_own_code(tmp_path: Path, model_type: str) -> None:
    from empathic_lora.lm import pretrained
    from empathic_lora.lm.builtin_models import tiny_gpt2_dir

    model = tmp_path / "custom-model"
    shutil.copytree(tiny_gpt2_dir(), model)
    marker = tmp_path / "code-ran"
    config = json.loads((model / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig", "AutoModelForCausalLM": "modeling_custom.Custom"}
    (model / "config.json").write_text(json.dumps(config))
    for module in ("configuration_custom", "modeling_custom"):
        (model / f"{module}.py").write_text(f"open({str(marker)!r}, 'w')\n")
    if model_type == "gpt2":  # a known architecture: transformers' own class, not the directory's code
        assert type(pretrained.load_model(str(model), random_init=True)).__module__.startswith("transformers.")
    else:  # only the directory's code could build it: refused
        with pytest.raises(UserError, match="contains custom code"):  # one line, nothing run
            pretrained.load_model(str(model), random_init=True)
    assert not marker.exists()


# -- the code itself: no way around the rules above -----------------------------------------------
def _calls(name: str) -> list[tuple[Path, ast.Call]]:
    """Every call of a function or method called `name` in the project's code."""
    found = []
    for source in SOURCES:
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Call):
                func = node.func
                if (isinstance(func, ast.Attribute) and func.attr == name) or (isinstance(func, ast.Name) and func.id == name):
                    found.append((source, node))
    return found


def _keyword(call: ast.Call, name: str) -> object:
    value = next((k.value for k in call.keywords if k.arg == name), None)
    return value.value if isinstance(value, ast.Constant) else value


def test_every_torch_load_is_weights_only() -> None:
    loads = [(s, c) for s, c in _calls("load") if isinstance(c.func, ast.Attribute) and ast.unparse(c.func) == "torch.load"]
    assert loads, "torch.load is used (checkpoint_file.read)"
    for source, call in loads:
        assert _keyword(call, "weights_only") is True, f"{source}:{call.lineno}"
    for unsafe in ("load_from_checkpoint", "pickle.load", "pickle.loads", "dill.load", "joblib.load"):
        assert not [c for _, c in _calls(unsafe.split(".")[-1]) if ast.unparse(c.func).endswith(unsafe)], unsafe


def test_remote_code_is_never_trusted() -> None:
    settings = [(s, c.lineno, k.value) for s, c in [*_calls("from_pretrained"), *_calls("from_config")]
                for k in c.keywords if k.arg == "trust_remote_code"]
    assert all(isinstance(v, ast.Constant) and v.value is False for _, _, v in settings), settings
    dict_settings = [(s, n.lineno) for s in SOURCES for n in ast.walk(ast.parse(s.read_text()))
                     if isinstance(n, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "trust_remote_code" for k in n.keys)]
    for source, line in dict_settings:
        assert '"trust_remote_code": False' in source.read_text().splitlines()[line - 1], f"{source}:{line}"


def test_archives_are_extracted_with_the_data_filter() -> None:
    extractions = [*_calls("extractall"), *_calls("extract")]
    tar = [(s, c) for s, c in extractions if "tar" in ast.unparse(c.func)]
    assert tar, "the archive is extracted with tarfile"
    for source, call in tar:
        assert _keyword(call, "filter") == "data", f"{source}:{call.lineno}"
