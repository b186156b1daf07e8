"""Prefect for the flow tests: offline, its temporary server's database in a private folder (not ~/.prefect)."""

from __future__ import annotations

import os
import tempfile

# Before Prefect is imported (it reads its settings then); one temporary server serves the whole test session.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect-home-"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # also keeps its shutdown message off closed streams
