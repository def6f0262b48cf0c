"""Data: the raw EmpatheticDialogues files (`raw_csv`), their download (`download`), the emotion labels
(`emotion_labels`), the LightningDataModule that turns them into batches (`datamodule`), the order
batches are drawn in (`batch_order`), and the hand-written sample shipped for offline runs (`sample/`)."""
