"""Serving: the HTTP service over a registry version (routes, protocols, the static page);
the predictor it serves is digits.registry.load's."""
