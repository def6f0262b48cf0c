"""Evaluation: the metrics (`metrics`; a new one goes there and into docs/metrics.md), generating and
scoring replies for a split (`reply_scoring`), the run files they write (`samples_file`,
`results_file`), the table that compares runs (`compare_runs`, `python -m empathic_lora.score`) and
the training curves (`plot_curves`, `python -m empathic_lora.plot`)."""
