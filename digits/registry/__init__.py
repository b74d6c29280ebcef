"""The registry: store (the Registry), layout, versions, aliases and history, the lock,
manifest and schema, card, gate."""
