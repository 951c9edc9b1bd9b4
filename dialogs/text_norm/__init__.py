"""Spelling-tolerant tokens for the NLU: what a phone turn looks like after ASR is folded onto what was trained."""
