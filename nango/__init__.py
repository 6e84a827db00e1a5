"""A self-hostable integrations platform, wire-compatible with Nango."""

__version__ = "0.1.0"
