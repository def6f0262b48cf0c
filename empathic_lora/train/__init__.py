"""Training: the LightningModule that holds the objective (`lora_module`), the callbacks that make
runs safe to stop and resume (`callbacks`), and the LightningCLI behind `train.py` (`cli`).
A new training objective starts in `lora_module.py`."""
