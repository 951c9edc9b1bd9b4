"""Veratur's Rasa custom actions (rasa-sdk, Python 3.11): tourism and trámite answers from the catalogs,
trámite status and case opening through the case bridge. `veratur actions` serves them (server.py).

Every reply carries the engine's payload (see payloads.py); no SQL here: the case bridge's service is the only
door to the citizen record.
"""
