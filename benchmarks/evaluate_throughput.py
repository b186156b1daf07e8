"""Evaluation throughput against the simulator's own limit, measured in the same run, and the stage's start-up.

    python -m benchmarks.evaluate_throughput [--params params.yaml] [--policies models/finetune/baseline-0 expert]
                                             [--raw-steps 400]

Needs the collected data (`dvc repro collect`); a trained policy directory (the default: the baseline of seed 0,
after `dvc repro finetune@baseline-0`) or `tiny` (a random-weight conv net saved and loaded through the policy
registry, for when no VLA is trained yet) or a built-in (expert, random). For each policy the benchmark runs
`python -m stages.evaluate` as its own process on params.yaml's default suites in a temporary folder (the demos and
the policy linked in), and reports the process's wall time, the rollout's wall time and env steps/s (the stage logs
both), and the share of the process spent outside the rollout (imports, policy load, simulator start-up, writing
results, MLflow). The limit is one process stepping one simulator per task with random actions, rendering the
policy's cameras only every `evaluate.replan_every` steps (as a rollout does), times `evaluate.workers`.
Targets: evaluation >= 0.6 x the limit; start-up and teardown < 25% of the stage's wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.cli import load_stage_params
from common.demos import DemoReader
from common.logs import setup_logging
from common.policy import META_FILE, Observation, Policy, is_builtin, register_loader
from common.simulators import get_simulator
from stages.evaluate import DEMOS, STAGE, Params

TINY_LOADER = "tiny_conv"
WEIGHTS = "model.pt"


class TinyConvNet(nn.Module):
    """A few strided convolutions per camera, pooled, with the proprio, to a chunk of actions in [-1, 1]."""

    def __init__(self, cameras: int, proprio_dim: int, chunk: int, action_dim: int, width: int = 16):
        super().__init__()
        self.chunk, self.action_dim = chunk, action_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 5, stride=2, padding=2), nn.GELU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(cameras * width + proprio_dim, 64), nn.GELU(),
                                  nn.Linear(64, chunk * action_dim), nn.Tanh())

    def forward(self, images: list[torch.Tensor], proprio: torch.Tensor) -> torch.Tensor:
        """images: per camera (B, 3, H, W) in [0, 1]; proprio (B, P) -> (B, chunk, action_dim)."""
        features = torch.cat([self.encoder(x) for x in images] + [proprio], dim=1)
        return self.head(features).view(-1, self.chunk, self.action_dim)


class TinyConvPolicy:
    """The Policy protocol around TinyConvNet: batched, no grad, one forward pass per call."""

    def __init__(self, net: TinyConvNet, cameras: tuple[str, ...], image_size: int):
        self.net, self.cameras, self.image_size, self.chunk = net.eval(), cameras, image_size, net.chunk

    @torch.no_grad()
    def act(self, obs: Observation) -> np.ndarray:
        """(B, chunk, A) float32."""
        images = [torch.from_numpy(obs.images[c]).permute(0, 3, 1, 2).float() / 255.0 for c in self.cameras]
        return self.net(images, torch.from_numpy(obs.proprio)).numpy()


def save_tiny_policy(directory: Path, cameras: tuple[str, ...], image_size: int, chunk: int = 8,
                     action_dim: int = 4, proprio_dim: int = 4, seed: int = 0) -> Path:
    """Write a randomly initialised tiny policy as a policy directory (meta.json + weights)."""
    torch.manual_seed(seed)
    net = TinyConvNet(len(cameras), proprio_dim, chunk, action_dim)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), directory / WEIGHTS)
    meta = {"policy": TINY_LOADER, "cameras": list(cameras), "image_size": image_size, "chunk": chunk,
            "action_dim": action_dim, "proprio_dim": proprio_dim}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))
    return directory


@register_loader(TINY_LOADER)
def load_tiny_policy(directory: Path, meta: dict[str, Any]) -> Policy:
    """Load a `save_tiny_policy` directory."""
    net = TinyConvNet(len(meta["cameras"]), meta["proprio_dim"], meta["chunk"], meta["action_dim"])
    net.load_state_dict(torch.load(directory / WEIGHTS, map_location="cpu", weights_only=True))
    return TinyConvPolicy(net, tuple(meta["cameras"]), int(meta["image_size"]))


def raw_rate(simulator: str, tasks: tuple[str, ...], cameras: tuple[str, ...], image_size: int, steps: int,
             render_every: int) -> float:
    """Steps/s of simulator steps with a render of `cameras` every `render_every` steps, random actions, one
    process."""
    rng = np.random.default_rng(0)
    sims = get_simulator(simulator)
    low, high = np.array(sims.action_space.low), np.array(sims.action_space.high)
    done, busy = 0, 0.0
    for task in tasks:
        sim = sims.scene(task, cameras, image_size)
        sim.reset(sim.draw_layout(0, "demos", 0))
        start = time.perf_counter()
        for step in range(steps):
            sim.step(rng.uniform(low, high))
            if step % render_every == 0:
                sim.render()
        busy += time.perf_counter() - start
        done += steps
        sim.close()
    return done / busy


ROLLOUT_LINE = re.compile(r"(\d+) env steps in ([\d.]+) s")


@dataclasses.dataclass(frozen=True)
class StageTiming:
    """One `python -m stages.evaluate` process: its wall time and the rollout's inside it."""

    process_s: float
    rollout_s: float
    env_steps: int

    @property
    def outside_share(self) -> float:
        """Share of the process spent outside the rollout: start-up and teardown."""
        return 1 - self.rollout_s / self.process_s


def evaluation_timing(policy: str, params_file: Path, demos: Path) -> StageTiming:
    """Run the evaluate stage on `policy` as its own process in a temporary folder; time it and its rollout."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / DEMOS).parent.mkdir(parents=True)
        (root / DEMOS).symlink_to(demos.resolve())
        if policy == "tiny":
            with DemoReader(demos) as reader:
                meta = reader.meta
            save_tiny_policy(root / "tiny", tuple(meta.cameras), meta.image_size[0])
        elif not is_builtin(policy):
            (root / policy).parent.mkdir(parents=True, exist_ok=True)
            (root / policy).symlink_to(Path(policy).resolve())
        # `tiny` is registered by this module: the stage process imports it to find the loader.
        prelude = "import benchmarks.evaluate_throughput; " if policy == "tiny" else ""
        command = [sys.executable, "-c", f"{prelude}import runpy; runpy.run_module('stages.evaluate', "
                   "run_name='__main__')", "--params", str(params_file.resolve()), "--root", str(root),
                   "--policy", policy, "--name", "bench"]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        process_s = time.perf_counter() - start
        if done.returncode:
            raise SystemExit(f"evaluate {policy} failed ({done.returncode}):\n{done.stderr[-2000:]}")
        found = ROLLOUT_LINE.findall(done.stderr + done.stdout)
        if not found:
            raise SystemExit(f"evaluate {policy}: no rollout line in its log:\n{done.stderr[-2000:]}")
        steps, rollout_s = found[-1]
    return StageTiming(process_s, float(rollout_s), int(steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--policies", nargs="+", default=["models/finetune/baseline-0", "expert"],
                        help="policy directories, `tiny` and/or built-in names")
    parser.add_argument("--raw-steps", type=int, default=400, help="raw steps per task")
    args = parser.parse_args()
    setup_logging()
    params, _ = load_stage_params(args.params, STAGE, Params)
    with DemoReader(DEMOS) as reader:
        meta = reader.meta
    raw = raw_rate(meta.env, meta.tasks, tuple(meta.cameras), meta.image_size[0], args.raw_steps, params.replan_every)
    limit = raw * params.workers
    print(f"simulator limit: {raw:.1f} steps/s per process (render {len(meta.cameras)} cameras at "
          f"{meta.image_size[0]} px every {params.replan_every} steps) x {params.workers} workers = {limit:.1f}")
    for policy in args.policies:
        timing = evaluation_timing(policy, args.params, DEMOS)
        rate = timing.env_steps / timing.rollout_s
        print(f"evaluate {policy}: {timing.env_steps} env steps, rollout {timing.rollout_s:.1f} s = {rate:.1f} "
              f"steps/s = {rate / limit:.2f} x limit (target >= 0.6); process {timing.process_s:.1f} s, "
              f"{100 * timing.outside_share:.0f}% outside the rollout (target < 25%)")


if __name__ == "__main__":
    main()
