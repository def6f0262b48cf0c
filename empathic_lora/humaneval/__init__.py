"""Human evaluation: blind pairwise judgments of two runs' replies in the browser, and their report.

- `study`: pairing two samples.jsonl files, attention checks, each annotator's order and sides.
- `storage`: the SQLite database (the study and one row per judgment).
- `report`: statistics and the CSV export.
- `app` and `static/`: the page and its API, on the shared `empathic_lora.web` layer.

Run it with `python -m empathic_lora.humaneval serve|report` (see docs/humaneval.md).
"""
