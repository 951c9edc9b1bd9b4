"""Rasa graph components backed by the catalogs (imported by Rasa as `catalog_nlu.*`, its cwd being dialogs/)."""
