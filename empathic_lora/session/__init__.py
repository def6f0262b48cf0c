"""What chat and serve share: loading a trained model from anything train.py or export wrote
(`trained_model`), the flags that choose and configure it (`flags`), and one conversation's state,
prompt and decoding (`conversation_state`)."""
