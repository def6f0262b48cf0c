"""`python -m empathic_lora.plot`, the command people type; the code is `evaluate/plot_curves.py`."""

from empathic_lora.evaluate.plot_curves import main

if __name__ == "__main__":
    main()
