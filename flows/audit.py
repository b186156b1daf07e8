"""`python -m flows.audit [--metric FILE:KEY] [--stage NAME] [--no-mlflow]` (`make audit`): audit reported numbers.

For a reported number (or every evaluation), print its chain of stages (demonstrations -> LAM -> tokenizer ->
tokens -> policy -> evaluation) with content hashes and params; exit 1 if the files on disk, dvc.lock and MLflow
disagree anywhere along it. Not a DVC stage (it writes nothing), so it lives beside the flow whose lineage it
checks; the logic is in common/audit.py.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from common.audit import ReportedNumber, StageAudit, audit, cached_outputs, find_reported_number
from common.config import ParamsError
from common.dvc_graph import GraphError, read_stages
from common.tracking import flatten

_WIDTH = 120


def short(md5: str | None) -> str:
    """A hash as printed: the first 12 hex digits (and `.dir` for folders), or `-` when there is none."""
    if md5 is None:
        return "-"
    return md5[:12] + (".dir" if md5.endswith(".dir") else "")


def format_stage(result: StageAudit) -> str:
    """One stage of the chain: command, params, inputs and outputs with hashes, the MLflow run, the verdict."""
    stage = result.stage
    lines = [f"== {stage.name}   [{'OK' if not result.findings else 'DISAGREES'}]", f"   cmd    {stage.cmd}"]
    params = [f"{k}={v}" for values in stage.locked_params.values() for k, v in flatten(values).items()]
    if params:
        lines += textwrap.wrap(", ".join(params), _WIDTH, initial_indent="   params ", subsequent_indent=" " * 10)
    for check in result.inputs:
        origin = f"from {check.producer}" if check.producer else "source"
        mark = "ok" if check.on_disk == check.locked else f"now {short(check.on_disk)}"
        lines.append(f"   in     {check.path}  {short(check.locked)}  ({origin}; {mark})")
    for check in result.outputs:
        mark = "ok" if check.on_disk == check.locked else f"on disk {short(check.on_disk)}"
        lines.append(f"   out    {check.path}  {short(check.locked)}  ({mark})")
    lines.append(f"   mlflow {result.mlflow}")
    lines += [f"   !! {finding.message}" for finding in result.findings]
    return "\n".join(lines)


def main() -> None:
    """Audit, print the chain, exit 0 when everything agrees and 1 otherwise (2 on bad arguments)."""
    parser = argparse.ArgumentParser(prog="python -m flows.audit", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="the DVC repository (default: .)")
    parser.add_argument("--metric", action="append", default=[], metavar="FILE:KEY",
                        help="a reported number, e.g. metrics/evaluate/la_tok-0.json:success.rate (repeatable)")
    parser.add_argument("--stage", action="append", default=[], metavar="NAME",
                        help="audit this stage's chain, e.g. evaluate@la_tok-0 (repeatable; default: every evaluate)")
    parser.add_argument("--no-mlflow", action="store_true", help="skip the MLflow check")
    args = parser.parse_args()
    try:
        stages = read_stages(args.root)
        numbers: list[ReportedNumber] = [find_reported_number(args.root, stages, spec) for spec in args.metric]
        targets = list(args.stage) + [n.stage for n in numbers]
        cached, on_disk = cached_outputs(args.root, stages, targets)
        if cached and not on_disk:
            print(f"audit: the audited stages' {cached} DVC-cached outputs are not on disk: a clone holds dvc.lock, "
                  "metrics and the report, not the DVC cache. Next step: `make study` rebuilds them (dvc.lock's "
                  "hashes are reproduced on this machine kind), then `make audit`", file=sys.stderr)
            sys.exit(1)
        results = audit(args.root, targets, check_mlflow=not args.no_mlflow)
    except (GraphError, ParamsError) as exc:
        print(f"audit: {exc}", file=sys.stderr)
        sys.exit(2)
    for number in numbers:
        print(f"reported number: {number.file}:{number.key} = {number.value}   (written by {number.stage})")
    print("\n\n".join(format_stage(result) for result in results))
    findings = [finding for result in results for finding in result.findings]
    if findings:
        print(f"\naudit FAILED: {len(findings)} disagreement(s) between disk, dvc.lock and MLflow:", file=sys.stderr)
        for finding in findings:
            print(f"  - {finding}", file=sys.stderr)
        sys.exit(1)
    print(f"\naudit passed: {len(results)} stage(s); files on disk, dvc.lock and MLflow agree")


if __name__ == "__main__":
    main()
