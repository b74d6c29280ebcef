"""The registry: versions, aliases and history, the lock, manifest and schema, card, gate."""
