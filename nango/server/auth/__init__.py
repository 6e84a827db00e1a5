"""Auth flows and the credential shapes they produce (reference §4)."""
