"""The function author's SDK: models, decorators and the `nango` object functions receive."""
