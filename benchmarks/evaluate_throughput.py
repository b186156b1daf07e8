"""Evaluation throughput against the raw simulator step+render rate, measured in the same run.

    python -m benchmarks.evaluate_throughput [--params params.yaml] [--policies tiny expert] [--raw-steps 400]

Needs the collected data (`dvc repro collect`). There is no trained VLA yet, so the policy under test is a tiny
torch conv net over the policy cameras (random weights, saved and loaded through the policy registry like a
trained one: `tiny_conv`). For each policy the benchmark runs the `evaluate` stage on params.yaml's default
suites in a temporary folder and reports its wall time and environment steps per second (all workers, policy
inference included). The raw rate is one process stepping one simulator per task with random actions and
rendering the tiny policy's cameras after every step, nothing else. Target: evaluation >= 0.7 x raw.
"""

from __future__ import annotations

import argparse
import json
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
from common.policy import META_FILE, Observation, Policy, register_loader
from common.sim import MetaWorldSim
from common.tracking import TrackingParams
from stages.evaluate import DEMOS, EPISODES_FILE, STAGE, Item, Params, results_dir
from stages.evaluate.__main__ import main as evaluate_main

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


def raw_rate(tasks: tuple[str, ...], cameras: tuple[str, ...], image_size: int, steps: int) -> float:
    """Steps/s of simulator step + render of `cameras` after every step, random actions, one process."""
    rng = np.random.default_rng(0)
    done, busy = 0, 0.0
    for task in tasks:
        sim = MetaWorldSim(task, cameras, image_size)
        sim.reset(sim.draw_layout(0, "demos", 0))
        start = time.perf_counter()
        for _ in range(steps):
            sim.step(rng.uniform(-1, 1, 4))
            sim.render()
        busy += time.perf_counter() - start
        done += steps
        sim.close()
    return done / busy


def evaluation_rate(policy: str, params: Params, demos: Path) -> tuple[float, float, int]:
    """(env steps/s, wall seconds, env steps) of the evaluate stage on `policy`, in a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / DEMOS).parent.mkdir(parents=True)
        (root / DEMOS).symlink_to(demos.resolve())
        if policy == "tiny":
            with DemoReader(demos) as reader:
                meta = reader.meta
            save_tiny_policy(root / "tiny", tuple(meta.cameras), meta.image_size[0])
        start = time.perf_counter()
        evaluate_main(params, TrackingParams(False, "", "bench"), root, Item(policy=policy, name="bench"))
        wall = time.perf_counter() - start
        lines = (root / results_dir("bench") / EPISODES_FILE).read_text().splitlines()
        steps = sum(json.loads(line)["steps"] for line in lines)
    return steps / wall, wall, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--policies", nargs="+", default=["tiny", "expert"], help="tiny and/or built-in names")
    parser.add_argument("--raw-steps", type=int, default=400, help="raw steps per task")
    args = parser.parse_args()
    setup_logging()
    params, _ = load_stage_params(args.params, STAGE, Params)
    with DemoReader(DEMOS) as reader:
        meta = reader.meta
    raw = raw_rate(meta.tasks, tuple(meta.cameras), meta.image_size[0], args.raw_steps)
    print(f"raw simulator step+render ({len(meta.cameras)} cameras at {meta.image_size[0]}px, 1 process): "
          f"{raw:.1f} steps/s")
    for policy in args.policies:
        rate, wall, steps = evaluation_rate(policy, params, DEMOS)
        print(f"evaluate {policy:>6}: {steps} env steps in {wall:.1f} s = {rate:.1f} steps/s = {rate / raw:.2f} x raw "
              f"(target >= 0.7; {params.workers} workers, {params.parallel_episodes} parallel episodes)")


if __name__ == "__main__":
    main()
