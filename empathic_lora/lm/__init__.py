"""The language model and its adapters: loading a pretrained base (`pretrained`, with the builtin and
GGUF bases in `builtin_models` and `gguf_bases`), wrapping it in a PEFT adapter (`adapters`), the
LM head applied only where the loss needs it (`supervised_lm_head`), the optional emotion classifier
(`emotion_classifier`), decoding a reply (`decoding`), and the checkpoint and export file formats
(`checkpoint_file`). A new base model starts in `pretrained.py`."""
