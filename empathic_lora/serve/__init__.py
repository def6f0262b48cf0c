"""`python serve.py`: the OpenAI-compatible HTTP API (`api_server`), its wire format (`openai_wire`)
and its web chat page (`page/`), over a `session` and the shared `web` layer."""
