"""Safety: the crisis-language check that chat and serve run on every message (`crisis_check`: the
patterns and their flags) and its optional semantic layer (`semantic_layer`)."""
