"""What a trained policy's actions depend on: its images, its proprio, or neither.

    python -m benchmarks.input_reliance POLICY_DIR [POLICY_DIR ...] [--split val] [--every 4] [--seed 0]

For frames of the demos of one split (every `every`-th step), this prints the open-loop L1 of each policy's K
actions against the demonstrated ones (normalized units, the policy's own statistics) three times: with the
true inputs, with the images of another frame of the same task, and with the proprio of another frame of the same
task. A policy that reads its cameras loses accuracy when its images are swapped; one that acts on proprio and
the task alone does not. The expert-free check a reader needs before blaming closed-loop failures on anything
else: the default study's VLA baseline and its conv reference policy differ here first (docs/results-and-ablations.md).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from common.demos import DemoReader
from common.demos.schema import Stats
from common.normalize import normalize
from common.policy import Observation, Policy, load_policy

DEMOS = Path("data/collect/demos.hdf5")
BATCH = 64


@dataclasses.dataclass(frozen=True)
class Frames:
    """Demo frames of one split: the inputs a policy sees and the K actions that followed each."""

    images: dict[str, np.ndarray]  # camera -> (N, H, W, 3) uint8
    proprio: np.ndarray  # (N, P) float32
    instructions: tuple[str, ...]
    tasks: tuple[str, ...]
    actions: np.ndarray  # (N, K, A) float32, environment units

    def permuted(self, order: np.ndarray, images: bool, proprio: bool) -> "Frames":
        """The same frames with their images and/or proprio taken from the frames `order` names."""
        swapped = {c: v[order] for c, v in self.images.items()} if images else self.images
        return dataclasses.replace(self, images=swapped, proprio=self.proprio[order] if proprio else self.proprio)


def read_frames(path: Path, split: str, cameras: tuple[str, ...], chunk: int, every: int) -> Frames:
    """Every `every`-th step of each `split` demo that has K actions after it."""
    images, proprio, instructions, tasks, actions = {c: [] for c in cameras}, [], [], [], []
    with DemoReader(path) as reader:
        for name in reader.names:
            if reader.split(name) != split:
                continue
            episode = reader.episode(name, cameras=cameras)
            steps = np.arange(0, len(episode.actions) - chunk + 1, every)
            for camera in cameras:
                images[camera].append(episode.images[camera][steps])
            proprio.append(episode.proprio_vector(reader.meta.proprio_keys)[steps].astype(np.float32))
            instructions += [episode.instruction] * len(steps)
            tasks += [episode.task] * len(steps)
            actions.append(np.stack([episode.actions[t:t + chunk] for t in steps]).astype(np.float32))
    if not tasks:
        raise SystemExit(f"{path}: no demos in split {split!r}. "
                         "Next step: pass --split train or rerun `dvc repro collect`")
    return Frames({c: np.concatenate(v) for c, v in images.items()}, np.concatenate(proprio), tuple(instructions),
                  tuple(tasks), np.concatenate(actions))


def within_task_permutation(tasks: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
    """An order that sends each frame to another frame of the same task (a derangement where a task has 2+ frames)."""
    order = np.arange(len(tasks))
    names = np.asarray(tasks)
    for task in dict.fromkeys(tasks):
        index = np.flatnonzero(names == task)
        cycle = index[rng.permutation(len(index))]
        order[cycle] = np.roll(cycle, -1)  # one cycle through the task's frames in a random order
    return order


def open_loop_l1(policy: Policy, frames: Frames, stats: Stats, normalization: str) -> float:
    """Mean L1 of the policy's chunks against the demonstrated ones, in normalized units."""
    truth = normalize(frames.actions, stats, normalization)
    errors = []
    for start in range(0, len(frames.tasks), BATCH):
        part = slice(start, start + BATCH)
        count = len(frames.tasks[part])
        obs = Observation({c: frames.images[c][part] for c in policy.cameras}, frames.proprio[part],
                          frames.instructions[part], frames.tasks[part], np.zeros((count, 0), np.float32))
        predicted = normalize(policy.act(obs), stats, normalization)
        errors.append(np.abs(predicted - truth[part]).mean(axis=(1, 2)))
    return float(np.concatenate(errors).mean())


def reliance(policy: Policy, frames: Frames, stats: Stats, normalization: str, seed: int) -> dict[str, float]:
    """Open-loop L1 with the true inputs, the images swapped and the proprio swapped (within each task)."""
    order = within_task_permutation(frames.tasks, np.random.default_rng(seed))
    return {"true": open_loop_l1(policy, frames, stats, normalization),
            "images_swapped": open_loop_l1(policy, frames.permuted(order, images=True, proprio=False), stats,
                                           normalization),
            "proprio_swapped": open_loop_l1(policy, frames.permuted(order, images=False, proprio=True), stats,
                                            normalization)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("policies", nargs="+", type=Path, help="policy directories (models/finetune/<item>, ...)")
    parser.add_argument("--split", default="val", help="demo split whose frames are scored (default: val)")
    parser.add_argument("--every", type=int, default=4, help="score every n-th step of each demo (default: 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the within-task permutation")
    args = parser.parse_args()
    print("| policy | frames | L1 true | L1 images swapped | L1 proprio swapped |\n|---|---|---|---|---|")
    for directory in args.policies:
        policy = load_policy(directory)
        stats, normalization = getattr(policy, "action_stats", None), getattr(policy, "normalization", None)
        if stats is None:
            raise SystemExit(f"{directory}: this policy has no action statistics to score in normalized units "
                             "(expert and random policies do not). Next step: pass a trained policy directory")
        frames = read_frames(DEMOS, args.split, policy.cameras, policy.chunk, args.every)
        figures = reliance(policy, frames, stats, normalization, args.seed)
        print(f"| {directory} | {len(frames.tasks)} | {figures['true']:.4f} | {figures['images_swapped']:.4f} "
              f"| {figures['proprio_swapped']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
