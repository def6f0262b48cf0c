"""Safety: the crisis-language check that chat and serve run on every message (`crisis_check`: the
patterns and their flags) and its optional semantic layer (`semantic_layer`: exemplars and the
`learned_layer`, a classifier trained on bench/crisis_set/)."""
