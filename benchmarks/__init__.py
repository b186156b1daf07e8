"""Measurement scripts: they print figures; speed targets are never asserted in unit tests."""
