"""`python -m empathic_lora.plot`: a PNG from a real short run, and clear errors without metrics."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image

from conftest import assert_one_line_error, run_python
from empathic_lora.plot import smooth


def test_plot_of_a_real_short_run(tmp_path: Path) -> None:
    fit = run_python("train.py", "fit", "--config", "configs/tiny.yaml", "--trainer.max_epochs", "3",
                     "--model.num_generation_samples", "0", "--trainer.default_root_dir", str(tmp_path))
    assert fit.returncode == 0, fit.stderr[-3000:]
    run = tmp_path / "lightning_logs" / "version_0"
    out = tmp_path / "pictures" / "curves.png"
    result = run_python("-m", "empathic_lora.plot", str(run), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    height, width, _ = matplotlib.image.imread(out).shape
    assert (width, height) == (1500, 420)  # three panels side by side
    assert 20_000 < out.stat().st_size < 1_000_000  # drawn curves, not an empty canvas

    default = run_python("-m", "empathic_lora.plot", str(run))
    assert default.returncode == 0 and (run / "curves.png").is_file()


def test_a_run_dir_without_metrics_gives_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run_python("-m", "empathic_lora.plot", str(tmp_path)), str(tmp_path), "metrics.csv")
    (tmp_path / "metrics.csv").write_text("epoch,step,train/loss\n")  # a run killed before its first log
    assert_one_line_error(run_python("-m", "empathic_lora.plot", str(tmp_path)), "holds no train/loss")
    assert_one_line_error(run_python("-m", "empathic_lora.plot", str(tmp_path / "missing")), "does not exist")


def test_smoothing_starts_at_the_data_and_follows_it() -> None:
    assert smooth([4.0, 4.0, 4.0], 0.9) == [4.0, 4.0, 4.0]  # debiased: no drift towards 0
    values = smooth([0.0, 10.0], 0.5)
    assert values[0] == 0.0 and 0 < values[1] < 10
