"""Serve a trained model over an OpenAI-compatible API and a web chat page:
`python serve.py --checkpoint runs/quickstart` (`--help` for every flag)."""

from empathic_lora.serve.api_server import main

if __name__ == "__main__":
    main()
