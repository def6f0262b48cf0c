"""Train, validate, test or predict: `python train.py fit --config configs/quickstart.yaml`."""

from empathic_lora.train.cli import main

if __name__ == "__main__":
    main()
