"""The case bridge's web pages and REST API, plugged into the one app built by `veratur.webapp`."""
