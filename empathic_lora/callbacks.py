"""Kept so that configs naming `empathic_lora.callbacks.ModelCheckpoint` (saved before the layout by job) still load."""

from empathic_lora.train.callbacks import ExactResume, ModelCheckpoint, NonFiniteGuard  # noqa: F401
