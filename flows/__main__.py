"""`python -m flows [STAGE ...] [--max-parallel N] [--retries N] [--runner thread|dask|ray]`: run the study."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from common.config import ParamsError
from common.dvc_graph import GraphError
from common.logs import setup_logging
from flows.study import FlowError, FlowOptions, run_study

log = logging.getLogger("flows")


def main() -> None:
    """Parse the flags and run the flow; exit 1 when any stage fails or `dvc status` is not clean."""
    parser = argparse.ArgumentParser(prog="python -m flows", description="Run dvc.yaml's stages as a Prefect flow.")
    parser.add_argument("targets", nargs="*", help="stages to bring up to date, with everything upstream "
                        "(default: the whole graph); matrix items as DVC names them, e.g. finetune@la_tok-0")
    parser.add_argument("--root", type=Path, default=Path("."), help="the DVC repository (default: .)")
    parser.add_argument("--max-parallel", type=int, default=2, help="stages running at once (default: 2)")
    parser.add_argument("--retries", type=int, default=1, help="extra attempts for a failed stage (default: 1)")
    parser.add_argument("--retry-delay", type=float, default=5.0, help="seconds between attempts (default: 5)")
    parser.add_argument("--runner", choices=["thread", "dask", "ray"], default="thread",
                        help="Prefect task runner (dask/ray need prefect-dask/prefect-ray; see docs/scaling-out.md)")
    parser.add_argument("--address", default=None, help="existing Dask scheduler or Ray cluster address")
    args = parser.parse_args()
    setup_logging()
    try:
        options = FlowOptions(root=args.root, targets=tuple(args.targets), max_parallel=args.max_parallel,
                              retries=args.retries, retry_delay_s=args.retry_delay, runner=args.runner,
                              address=args.address)
        states = run_study(options)
    except (FlowError, GraphError, ParamsError) as exc:
        log.error("study flow failed:\n%s", exc)
        sys.exit(1)
    log.info("study flow finished: %s", states)


if __name__ == "__main__":
    main()
