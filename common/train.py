"""One training loop for every stage that trains (lam, action_vq, finetune), on accelerate.

The same code runs on a CPU, one GPU or many (`accelerate launch`). Batches come from a stateless function of
the step number, and accelerate's checkpoints carry the model, optimizer, scheduler and RNG states, so a run
killed at any step and resumed from its last checkpoint ends bit-identical to an uninterrupted one (on a CPU).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import json
import logging
import math
import resource
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import torch

from common.atomic import atomic_path
from common.config import Problem
from common.logs import progress
from common.tracking import StageRun

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "step_"
CHECKPOINT_INFO = "checkpoint.json"


@dataclasses.dataclass(frozen=True)
class TrainParams:
    """The `train` subsection of a training stage's params."""

    steps: int
    batch_size: int  # per process
    lr: float
    weight_decay: float
    warmup_steps: int  # linear warm-up, then `schedule`
    # constant: a resumed run with more steps continues the same curve; cosine: decays to 0 at the last step (the
    # curve depends on `steps`, so a checkpoint made for another number of steps is not resumed)
    schedule: Literal["constant", "cosine"]
    grad_clip: float
    precision: Literal["auto", "fp32", "bf16"]  # auto: bf16 on a GPU, fp32 on a CPU
    log_every: int
    checkpoint_every: int
    seed: int

    def problems(self) -> list[Problem]:
        """Range checks."""
        out = []
        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                out.append(Problem(name, getattr(self, name), "must be at least 1", "use a positive integer"))
        for name in ("lr", "grad_clip"):
            if getattr(self, name) <= 0:
                out.append(Problem(name, getattr(self, name), "must be positive", "e.g. 3e-4 / 1.0"))
        if self.weight_decay < 0 or self.warmup_steps < 0:
            out.append(Problem("weight_decay/warmup_steps", (self.weight_decay, self.warmup_steps),
                               "must not be negative", "use 0 or more"))
        return out


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a finished training run measured."""

    steps: int
    resumed_from: int
    samples_per_second: float
    data_wait_fraction: float
    peak_memory_mb: float
    final_metrics: dict[str, float]


LossFn = Callable[[torch.nn.Module, Any], tuple[torch.Tensor, Mapping[str, float]]]


def resume_fields(params: TrainParams) -> dict[str, Any]:
    """The training params a checkpoint must share to be resumed: all but the cadence, and the step count unless
    the learning-rate curve depends on it."""
    fields = dataclasses.asdict(params)
    for key in ("log_every", "checkpoint_every") + (("steps",) if params.schedule == "constant" else ()):
        fields.pop(key)
    return fields


def lr_factor(params: TrainParams, step: int) -> float:
    """The learning rate at optimizer step `step` as a fraction of params.lr: linear warm-up, then the schedule."""
    warmup = max(params.warmup_steps, 1)
    if step < warmup or params.schedule == "constant":
        return min(1.0, (step + 1) / warmup)
    progress = (step - warmup + 1) / max(params.steps - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def make_accelerator(params: TrainParams) -> Any:
    """An Accelerator that uses a GPU when there is one (bf16 under precision 'auto'), else the CPU in fp32."""
    from accelerate import Accelerator

    on_gpu = torch.cuda.is_available()
    precision = {"auto": "bf16" if on_gpu else "no", "fp32": "no", "bf16": "bf16"}[params.precision]
    # cpu=True keeps a multi-process launch on a CPU-only machine one distributed run, not N independent ones;
    # the scheduler steps once per optimizer step, not once per process.
    return Accelerator(cpu=not on_gpu, mixed_precision=precision, step_scheduler_with_optimizer=False)


def latest_checkpoint(directory: Path, fingerprint: str, max_step: int) -> tuple[Path | None, int]:
    """The newest checkpoint in `directory` made under the same fingerprint, at or before `max_step`."""
    if not directory.is_dir():
        return None, 0
    found = []
    for path in directory.glob(f"{CHECKPOINT_PREFIX}*"):
        info_path = path / CHECKPOINT_INFO
        if not info_path.is_file():
            continue
        info = json.loads(info_path.read_text())
        if info.get("fingerprint") != fingerprint:
            log.info("ignoring checkpoint %s: made under other params or data", path)
            continue
        if int(info["step"]) > max_step:
            log.info("ignoring checkpoint %s: past the %d steps asked for", path, max_step)
            continue
        found.append((int(info["step"]), path))
    if not found:
        return None, 0
    step, path = max(found)
    return path, step


def _save_checkpoint(accelerator: Any, directory: Path, step: int, fingerprint: str) -> None:
    """Save the full training state atomically, then delete older checkpoints."""
    if accelerator.is_main_process:
        directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{CHECKPOINT_PREFIX}{step:08d}"
    tmp = directory / f".{final.name}.partial"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(output_dir=str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / CHECKPOINT_INFO).write_text(json.dumps({"step": step, "fingerprint": fingerprint}))
        if final.exists():  # a checkpoint of the same step from a run under other params
            shutil.rmtree(final)
        tmp.rename(final)
        for old in directory.glob(f"{CHECKPOINT_PREFIX}*"):
            if old != final:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()


def train(
    model: torch.nn.Module,
    loss_fn: LossFn,
    batch_at: Callable[[int, int], Any],
    params: TrainParams,
    checkpoint_dir: Path,
    fingerprint: str,
    run: StageRun,
    accelerator: Any | None = None,
    stop_after: int | None = None,
    accumulate: int = 1,
) -> TrainResult:
    """Train `model` for params.steps optimizer steps, resuming from a matching checkpoint if there is one.

    `batch_at(step, process_index)` returns that step's batch for one process (on the CPU); `loss_fn` returns the
    loss and scalar metrics. `stop_after` ends the run early after that step (tests use it to simulate a kill).
    """
    accelerator = accelerator or make_accelerator(params)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=params.lr, weight_decay=params.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(lr_factor, params))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    resume_path, start = latest_checkpoint(checkpoint_dir, fingerprint, params.steps)
    if resume_path is not None:
        accelerator.load_state(str(resume_path))
        log.info("resumed from %s (step %d)", resume_path, start)
    last = params.steps if stop_after is None else min(stop_after, params.steps)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    metrics: dict[str, float] = {}
    data_time, started = 0.0, time.perf_counter()
    model.train()
    bar = progress(range(start, last), desc="train", initial=start, total=last, disable=not accelerator.is_main_process)
    for step in bar:
        fetch = time.perf_counter()
        batch = _to_device(batch_at(step, accelerator.process_index), accelerator.device)
        data_time += time.perf_counter() - fetch
        loss, step_metrics = _forward_backward(accelerator, model, loss_fn, batch, accumulate, step)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), params.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        metrics = {"loss": float(loss.detach()), "grad_norm": float(grad_norm), "lr": scheduler.get_last_lr()[0],
                   **{k: float(v) for k, v in step_metrics.items()}}
        if (step + 1) % params.log_every == 0 or step + 1 == last:
            run.log_metrics({f"train/{k}": v for k, v in metrics.items()}, step=step + 1)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
        if (step + 1) % params.checkpoint_every == 0 or step + 1 == last:
            _save_checkpoint(accelerator, checkpoint_dir, step + 1, fingerprint)
    elapsed = time.perf_counter() - started
    done = last - start
    return TrainResult(
        steps=last,
        resumed_from=start,
        samples_per_second=done * params.batch_size * accelerator.num_processes / elapsed if done else 0.0,
        data_wait_fraction=data_time / elapsed if done else 0.0,
        peak_memory_mb=peak_memory_mb(),
        final_metrics=metrics,
    )


def _forward_backward(accelerator: Any, model: torch.nn.Module, loss_fn: LossFn, batch: Any, accumulate: int,
                      step: int) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss and backward pass over `accumulate` micro-batches (gradients summed, losses and metrics averaged)."""
    parts = [batch] if accumulate == 1 else _split(batch, accumulate)
    total, sums = torch.zeros(()), {}
    for i, part in enumerate(parts):
        # Only the last micro-batch synchronises gradients across processes.
        sync = contextlib.nullcontext() if i == len(parts) - 1 else accelerator.no_sync(model)
        with sync:
            with accelerator.autocast():
                loss, metrics = loss_fn(model, part)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower train.lr or check the data")
            accelerator.backward(loss / len(parts))
        total = total + loss.detach().float().cpu() / len(parts)
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + float(value) / len(parts)
    return total, sums


def _split(batch: Any, parts: int) -> list[Any]:
    """A dict of tensors (batch first) cut into `parts` equal micro-batches."""
    if not isinstance(batch, dict):
        raise TypeError("gradient accumulation needs batches that are dicts of tensors")
    size = next(iter(batch.values())).shape[0]
    if size % parts:
        raise ValueError(f"batch of {size} does not split into {parts} equal micro-batches")
    return [{k: v[i * size // parts : (i + 1) * size // parts] for k, v in batch.items()} for i in range(parts)]


def peak_memory_mb() -> float:
    """Peak GPU memory when on a GPU, else this process's peak resident memory."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


@dataclasses.dataclass(frozen=True)
class EvalParams:
    """Held-out (val split) scoring after training (finetune, reference)."""

    max_samples: int  # samples scored, evenly spaced over the split
    batch_size: int

    def problems(self) -> list[Problem]:
        """Range checks."""
        return [Problem(f.name, getattr(self, f.name), "must be at least 1", "use a positive integer")
                for f in dataclasses.fields(self) if getattr(self, f.name) < 1]


class CurveRecorder:
    """What train() logs, to MLflow and to a JSON-lines history beside the checkpoints that survives a kill and
    resume; written as CSV for `dvc plots` at the end."""

    def __init__(self, run: StageRun, path: Path, resume_step: int):
        self.run, self.path = run, path
        rows = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
        self.rows = [r for r in rows if r["step"] <= resume_step]  # drop what a killed run logged after it
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in self.rows))

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Record one logged step (train() calls this) and pass it on to MLflow."""
        self.run.log_metrics(metrics, step)
        row = {"step": step, **{k.removeprefix("train/"): float(v) for k, v in metrics.items()}}
        self.rows.append(row)
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")

    def write_csv(self, path: Path) -> None:
        """The curve as CSV for `dvc plots` (one row per logged step)."""
        columns = sorted({k for r in self.rows for k in r} - {"step"})
        with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, ["step", *columns])
            writer.writeheader()
            writer.writerows(self.rows)
