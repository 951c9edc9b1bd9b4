"""The ground floor every package stands on: configuration, logging and masking, paths, shared vocabulary.

It imports nothing of the project (tests/foundation/test_layers.py keeps it so).
"""
