"""The Rasa dialogue project (YAML) and its Python side: action server code and the tourism / trámite catalogs."""
