"""Talk to a trained model: `python chat.py --checkpoint runs/quickstart` (`--help` for every flag)."""

from empathic_lora.chat.repl import main

if __name__ == "__main__":
    main()
