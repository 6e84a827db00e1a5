"""Test support code: real servers and a real browser for the suite (not product code)."""
