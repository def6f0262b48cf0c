"""results.json of a test run, and `python -m empathic_lora.score` on replies files and runs:
the test's own numbers reproduced, the metric list from YAML (`+` adds to the defaults),
bootstrap intervals, seed aggregation, and one-line errors."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, assert_one_line_error, run_python
from shared_helpers import logged_values

from empathic_lora.errors import UserError
from empathic_lora.evaluate import reply_scoring
from empathic_lora.evaluate.compare_runs import (
    bootstrap_interval,
    format_value,
    main,
    read_replies,
    reply_metric_specs,
)
from empathic_lora.evaluate.metrics import DEFAULT_REPLY_METRICS, build_reply_metrics

EXTRA = {"model": {"generation_metrics+": [
    {"name": "distinct3", "class_path": "empathic_lora.evaluate.metrics.DistinctN", "init_args": {"n": 3}}]}}


@pytest.fixture(scope="module")
def tested_run(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A `train.py test` of the tiny checkpoint with one metric added to the defaults by `+`."""
    root = tmp_path_factory.mktemp("tested")
    extra = root / "extra.yaml"
    extra.write_text(yaml.safe_dump(EXTRA))
    result = run_python("train.py", "test", "--config", "configs/tiny.yaml", "--config", str(extra),
                        "--ckpt_path", str(tiny_ckpt), "--trainer.enable_progress_bar", "false",
                        "--trainer.default_root_dir", str(root))
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "lightning_logs" / "version_0", extra


def test_results_json_holds_every_metric_the_split_config_checkpoint_commit_and_versions(tested_run, tiny_ckpt: Path) -> None:
    run, _ = tested_run
    results = json.loads((run / "results.json").read_text())
    logged = logged_values(run)
    # `+` kept every default and added distinct3; the field's metrics sit beside ours
    expected = {f"test/{name}" for name in ("loss", "ppl", "word_ppl", "word_ppl_field", "distinct3", "distinct1_field",
                                            "distinct2_intra", "bleu4", "rougeL_fmeasure", "length")}
    assert expected <= set(results["metrics"]) == set(logged)
    for key, value in logged.items():
        assert results["metrics"][key] == pytest.approx(value, rel=1e-6)
    samples = read_replies(run / "samples.jsonl")
    assert (results["stage"], results["split"], results["generation_samples"]) == ("test", "test", len(samples))
    assert results["examples"] >= len(samples) > 0
    assert results["checkpoint"] == str(tiny_ckpt.resolve())
    assert results["config"] == yaml.safe_load((run / "config.yaml").read_text())
    assert results["training_config"]["trainer"]["max_epochs"] == 6 and results["seed"] == 0
    assert results["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert set(results["versions"]) == {"torch", "lightning", "transformers", "peft"}
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert results["git_commit"].removesuffix("+dirty") == head


def test_the_scorer_reproduces_the_test_numbers_on_its_samples(tested_run) -> None:
    run, extra = tested_run
    logged = logged_values(run)
    specs = reply_metric_specs([extra])
    assert specs == [*DEFAULT_REPLY_METRICS, *EXTRA["model"]["generation_metrics+"]]
    scores = reply_scoring.score(build_reply_metrics(specs), read_replies(run / "samples.jsonl"))
    assert set(scores) == {key.removeprefix("test/") for key in logged} - {"loss", "ppl", "word_ppl", "word_ppl_field"}
    for key, value in scores.items():
        assert value == pytest.approx(logged[f"test/{key}"], rel=1e-6, abs=1e-9), key

    result = run_python("-m", "empathic_lora.score", str(run / "samples.jsonl"), "--config", str(extra), "--bootstrap", "0")
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    cells = dict(zip(header.split(), row.split()))
    assert cells["name"] == str(run / "samples.jsonl")
    for key, value in scores.items():
        assert cells[key] == format_value(value)


def test_a_run_directory_is_a_row_with_intervals_for_the_per_reply_metrics(tested_run, capsys: pytest.CaptureFixture) -> None:
    run, _ = tested_run
    main([str(run), "--bootstrap", "200"])
    row = capsys.readouterr().out.splitlines()[1]
    metrics = json.loads((run / "results.json").read_text())["metrics"]
    assert row.startswith(str(run))
    assert f"{format_value(metrics['test/length'])} [" in row  # a mean over replies: an interval
    assert f"{format_value(metrics['test/bleu4'])} [" not in row  # corpus BLEU: none
    assert format_value(metrics["test/word_ppl_field"]) in row


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_replies() -> None:
    rng = torch.Generator().manual_seed(0)
    few = torch.rand(20, generator=rng).double().numpy()
    many = torch.rand(2000, generator=rng).double().numpy()
    low, high = bootstrap_interval(few, 1000)
    assert few.min() < low < few.mean() < high < few.max()
    low_many, high_many = bootstrap_interval(many, 1000)
    assert high_many - low_many < (high - low) / 4
    assert bootstrap_interval(few, 1000) == (low, high)  # seeded


def _results(seed: int, bleu: float, r: int = 8) -> dict:
    config = {"seed_everything": seed, "model": {"r": r}, "trainer": {"default_root_dir": f"runs/s{seed}"}, "ckpt_path": f"s{seed}.ckpt"}
    return {"stage": "test", "split": "test", "examples": 10, "generation_samples": 4, "seed": seed,
            "metrics": {"test/bleu4": bleu, "test/ppl": 30.0 + seed}, "config": copy.deepcopy(config),
            "training_config": copy.deepcopy(config)}


def test_runs_that_differ_only_by_seed_are_one_row_of_mean_and_sd(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    paths = []
    for name, results in {"a": _results(0, 0.1), "b": _results(1, 0.2), "c": _results(2, 0.3), "other": _results(0, 0.5, r=16)}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(results))
        paths.append(str(tmp_path / name if name != "b" else tmp_path / name / "results.json"))
    main(paths)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 3, out
    assert "(seeds 0, 1, 2)" in lines[1] and "0.2 ± 0.1" in lines[1] and "31 ± 1" in lines[1]
    assert lines[2].startswith(str(tmp_path / "other")) and "0.5" in lines[2]


def test_a_root_directory_is_its_newest_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The `--trainer.default_root_dir` a user passed to test, as `--ckpt_path last` reads it."""
    for version, bleu, mtime in ((0, 0.125, 2_000_000_000), (1, 0.375, 1_000_000_000)):  # version_0 is the newer
        run = tmp_path / "lightning_logs" / f"version_{version}"
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps(_results(0, bleu)))
        os.utime(run / "results.json", (mtime, mtime))
    main([str(tmp_path)])
    row = capsys.readouterr().out.splitlines()[1]
    assert row.startswith(str(tmp_path / "lightning_logs" / "version_0")) and "0.125" in row


def test_a_replies_file_from_another_system_needs_only_reply_and_reference(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lines = [{"reply": "i am so sorry to hear that .", "reference": "oh no , i am sorry ."},
             {"reply": "that is great !", "reference": "wow , congratulations !"},
             {"reply": "that is great !", "reference": "how did it go ?"}]
    path = tmp_path / "other.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    config = tmp_path / "only.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"max_epochs": 1}, "model": {"generation_metrics": [
        {"name": "d1", "class_path": "empathic_lora.evaluate.metrics.DistinctN", "init_args": {"n": 1, "words": "field", "percent": True}}]}}))
    main([str(path), "--config", str(config)])
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["name", "replies", "d1"]
    assert row.split()[1:] == ["3", format_value(100 * 11 / 16)]  # 11 distinct of 16 NLTK words; corpus: no interval


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"reply": "hi"}\n', "bad.jsonl:1: not a samples line: expected a JSON object with string 'reply', 'reference'"),
        ('{"reply": "hi", "reference": "yo"}\nnot json\n', "bad.jsonl:2: not JSON"),
        ("\n", "bad.jsonl: holds no replies"),
    ],
)
def test_a_bad_replies_file_is_an_error_naming_the_line(tmp_path: Path, content: str, needle: str) -> None:
    (tmp_path / "bad.jsonl").write_text(content)
    with pytest.raises(UserError) as error:
        main([str(tmp_path / "bad.jsonl")])
    assert needle in str(error.value)


def test_missing_paths_runs_without_results_and_bad_metric_lists_are_errors(tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text('{"reply": "a", "reference": "b"}\n')
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"generation_metrics": [{"class_path": "nope.Nope"}]}}))
    for args, needle in (([str(tmp_path)], "no results.json"),
                         ([str(tmp_path / "r.jsonl"), "--config", str(bad)], "--config model.generation_metrics[0]: nope.Nope")):
        with pytest.raises(UserError) as error:
            main(args)
        assert needle in str(error.value)


def test_the_command_line_reports_a_mistake_in_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run_python("-m", "empathic_lora.score", str(tmp_path / "nope.jsonl")), "nope.jsonl: no such file")
