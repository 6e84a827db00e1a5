"""The `nango` command."""
