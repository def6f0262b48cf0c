"""Kept so that run configs saved before the layout by job (`class_path: empathic_lora.metrics.X`) still load."""

from empathic_lora.evaluate.metrics import *  # noqa: F403
