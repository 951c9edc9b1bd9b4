"""The citizen record shared by every channel (phone, web, office, kiosk, call center).

`case_bridge.service.CaseService` is the only door to its tables; `ivr.call.recorder.CaseRecorder` records calls
through it (with an on-node outbox when the database is away); `case_bridge.web` holds its web pages and REST API.
"""
