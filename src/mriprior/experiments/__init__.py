"""Runners that produce the figures and tables in docs/."""
