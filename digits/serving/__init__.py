"""Serving: the predictor over a registry version, the HTTP app, the static page."""
