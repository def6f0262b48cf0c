"""`python -m empathic_lora.plot`: a PNG from a real short run, and clear errors without metrics."""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.image
from conftest import assert_one_line_error, run_main, run_python

from empathic_lora.evaluate.plot_curves import main, smooth


def test_plot_of_a_real_short_run(tiny_ckpt: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"  # the session's tiny run, copied: the default output goes into the run directory
    run.mkdir()
    shutil.copy(tiny_ckpt.parents[1] / "metrics.csv", run)
    out = tmp_path / "pictures" / "curves.png"
    result = run_main(main, str(run), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    height, width, _ = matplotlib.image.imread(out).shape
    assert (width, height) == (1500, 420)  # three panels side by side
    assert 20_000 < out.stat().st_size < 1_000_000  # drawn curves, not an empty canvas

    default = run_main(main, str(run))
    assert default.returncode == 0 and (run / "curves.png").is_file()


def test_a_run_dir_without_metrics_gives_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run_main(main, str(tmp_path)), str(tmp_path), "metrics.csv")
    (tmp_path / "metrics.csv").write_text("epoch,step,train/loss\n")  # a run killed before its first log
    assert_one_line_error(run_main(main, str(tmp_path)), "holds no train/loss")
    # The command people type, in a process of its own: the shim keeps `python -m empathic_lora.plot`.
    assert_one_line_error(run_python("-m", "empathic_lora.plot", str(tmp_path / "missing")), "does not exist")


def test_smoothing_starts_at_the_data_and_follows_it() -> None:
    assert smooth([4.0, 4.0, 4.0], 0.9) == [4.0, 4.0, 4.0]  # debiased: no drift towards 0
    values = smooth([0.0, 10.0], 0.5)
    assert values[0] == 0.0 and 0 < values[1] < 10
