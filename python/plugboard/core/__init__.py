"""The seed's ``core``: execution modes, metadata, and the registry."""
