"""The node's recognition service: one process holds each speech model once and decodes many calls' streams.

It speaks the vosk-server WebSocket protocol (`protocol.py`), so a worker can use alphacep's own vosk-server
instead, and other systems can use this one. `server.py` is the service, `client.py` the worker's side.
"""
