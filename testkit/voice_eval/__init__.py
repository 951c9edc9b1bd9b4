"""The call-level voice regression suite: YAML conversation scripts a synthetic caller plays as real SIP calls
(human Spanish recordings, espeak-ng only where no recording has the words, through a G.711 channel model), with
their outcomes checked in the case record, and a report of task success, turn latency and recognizer WER.

It lives in testkit (not veratur/) because it is built on testkit.human_speech, which the layering keeps below
tests and benches only; `veratur eval calls` dispatches to `testkit.voice_eval.cli`.
"""
