"""Veratur, the application: CLI, process supervision, Kamailio configuration, web assembly, flow administration.

It assembles the packages below it (`ivr`, `dialogs`, `case_bridge`, `voice_models`, `foundation`)."""
