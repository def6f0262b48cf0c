"""`python -m empathic_lora.score`, the command people type; the code is `evaluate/compare_runs.py`."""

import sys

from empathic_lora.errors import run_cli
from empathic_lora.evaluate.compare_runs import main

if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
