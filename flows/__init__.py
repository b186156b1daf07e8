"""The Prefect flow that executes dvc.yaml (`python -m flows`): orchestration only, no ML logic."""

from __future__ import annotations

import os

# Offline, no analytics, and room for the temporary Prefect server to start on a loaded 2-core machine.
# Set before Prefect is first imported: it reads its settings then.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
