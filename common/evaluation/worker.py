"""The simulator side of closed-loop evaluation: environments that run action chunks and report observations.

A worker hosts the simulators of the lanes the scheduler places on it (a lane is one of a task's concurrent
episode places; its simulator is built on first use and reused, since a build costs about a second) and the
episode running in each lane. Each round it receives one operation per episode (start it, or run an action
chunk) and answers with the episode's next observation or its end. The same code runs in a worker
process (`ProcessWorker`) or in the calling process (`LocalWorker`); which one hosts an episode never changes
its result.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.connection
import traceback
import warnings

import numpy as np

from common.simulators import Scene, get_simulator


@dataclasses.dataclass(frozen=True)
class EpisodeSpec:
    """One planned episode: which task, layout and visual shift, and the seed that draws the shift."""

    index: int  # position in the plan (the order results are reported in)
    suite: str
    task: str
    instruction: str
    categories: tuple[str, ...]
    episode: int  # number within (suite, task)
    layout_index: int  # index into the suite's layout source (train demos or held-out layouts)
    layout: tuple[float, ...]
    seed: int
    visual_shift: float | None
    video: bool


@dataclasses.dataclass(frozen=True)
class SimSettings:
    """Which simulator an evaluation runs, what its scenes render and how long an episode may run."""

    simulator: str  # a name `common.simulators.get_simulator` knows (the dataset's `env`)
    policy_cameras: tuple[str, ...]  # rendered at each re-plan
    video_camera: str
    image_size: int
    max_steps: int
    video_stride: int  # a video frame every this many steps


Lane = tuple[str, int]  # (task, number): one simulator, running one episode at a time


@dataclasses.dataclass(frozen=True)
class Start:
    """Reset the lane's simulator for a new episode."""

    lane: Lane
    spec: EpisodeSpec


@dataclasses.dataclass(frozen=True)
class Run:
    """Execute an action chunk (R, A) open-loop in the lane's episode."""

    lane: Lane
    actions: np.ndarray


@dataclasses.dataclass(frozen=True)
class Report:
    """A lane after its operation: its episode's next observation, or (done) how the episode ended."""

    lane: Lane
    done: bool
    state: np.ndarray | None = None  # (obs_dim,) the simulator's raw state observation
    proprio: np.ndarray | None = None  # (P,) float32
    images: dict[str, np.ndarray] | None = None  # camera -> (H, W, 3) uint8, upright
    success: bool = False
    steps: int = 0
    steps_to_success: int | None = None
    failure: str | None = None  # None, "timeout" or "error"
    error: str | None = None
    frames: list[np.ndarray] | None = None  # video frames, video episodes only


@dataclasses.dataclass
class _Episode:
    spec: EpisodeSpec
    sim: Scene
    steps: int = 0
    frames: list[np.ndarray] | None = None


class WorkerState:
    """The simulators and running episodes of one worker."""

    def __init__(self, settings: SimSettings):
        self.settings = settings
        self.cameras = tuple(dict.fromkeys((*settings.policy_cameras, settings.video_camera)))
        self.simulator = get_simulator(settings.simulator)
        self.sims: dict[Lane, Scene] = {}
        self.episodes: dict[Lane, _Episode] = {}
        self._low = np.array(self.simulator.action_space.low)
        self._high = np.array(self.simulator.action_space.high)
        warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high")  # the env clips by design

    def handle(self, ops: list[Start | Run]) -> list[Report]:
        """Apply one round's operations, in order."""
        return [self._start(op) if isinstance(op, Start) else self._run(op) for op in ops]

    def _start(self, op: Start) -> Report:
        spec = op.spec
        if op.lane not in self.sims:
            self.sims[op.lane] = self.simulator.scene(spec.task, self.cameras, self.settings.image_size)
        sim = self.sims[op.lane]
        episode = _Episode(spec, sim, frames=[] if spec.video else None)
        self.episodes[op.lane] = episode
        try:
            sim.shift_appearance(spec.visual_shift, spec.seed)
            state = sim.reset(np.asarray(spec.layout))
        except Exception as exc:  # noqa: BLE001 - a simulator failure ends this episode, not the evaluation
            return self._end(op.lane, False, None, "error", f"reset failed: {type(exc).__name__}: {exc}")
        self._video_frame(episode)
        return self._observe(op.lane, state)

    def _run(self, op: Run) -> Report:
        episode = self.episodes[op.lane]
        if not np.isfinite(op.actions).all():
            return self._end(op.lane, False, None, "error", "the policy returned non-finite actions")
        state = None
        for action in np.clip(op.actions, self._low, self._high):
            try:
                state, success, _ = episode.sim.step(action)
            except Exception as exc:  # noqa: BLE001 - e.g. unstable physics: this episode fails, others go on
                return self._end(op.lane, False, None, "error", f"step failed: {type(exc).__name__}: {exc}")
            episode.steps += 1
            if episode.frames is not None and episode.steps % self.settings.video_stride == 0:
                self._video_frame(episode)
            if success:
                return self._end(op.lane, True, episode.steps, None, None)
            if episode.steps >= self.settings.max_steps:
                return self._end(op.lane, False, None, "timeout", None)
        return self._observe(op.lane, state)

    def _video_frame(self, episode: _Episode) -> None:
        if episode.frames is not None:
            episode.frames.append(episode.sim.render((self.settings.video_camera,))[self.settings.video_camera])

    def _observe(self, lane: Lane, state: np.ndarray) -> Report:
        sim = self.episodes[lane].sim
        proprio = np.concatenate([sim.proprio(state)[k] for k in self.simulator.proprio_keys]).astype(np.float32)
        images = sim.render(self.settings.policy_cameras)
        return Report(lane, False, state=np.asarray(state), proprio=proprio, images=images)

    def _end(self, lane: Lane, success: bool, at: int | None, failure: str | None, error: str | None) -> Report:
        episode = self.episodes.pop(lane)
        if episode.frames is not None and (not episode.frames or episode.steps % self.settings.video_stride):
            self._video_frame(episode)  # the last frame, so the video shows how it ended
        return Report(lane, True, success=success, steps=episode.steps, steps_to_success=at, failure=failure,
                      error=error, frames=episode.frames)

    def close(self) -> None:
        """Release every simulator (GL contexts first, while the process is whole)."""
        for sim in self.sims.values():
            sim.close()
        self.sims.clear()


class LocalWorker:
    """A worker in the calling process (no start-up cost; for tests and one-core runs)."""

    def __init__(self, settings: SimSettings):
        self.state = WorkerState(settings)
        self._pending: list[Report] = []

    def submit(self, ops: list[Start | Run]) -> None:
        """Run the operations now; `collect` returns their reports."""
        self._pending = self.state.handle(ops)

    def collect(self) -> list[Report]:
        """The reports of the last `submit`."""
        return self._pending

    def close(self) -> None:
        """Release the simulators."""
        self.state.close()


def _serve(conn: multiprocessing.connection.Connection, settings: SimSettings) -> None:
    """A worker process's loop: a list of operations in, a list of reports out; None ends it."""
    state = WorkerState(settings)
    try:
        while (ops := conn.recv()) is not None:
            try:
                conn.send(("ok", state.handle(ops)))
            except Exception:  # noqa: BLE001 - report the worker's own bug to the scheduler, then stop
                conn.send(("crash", traceback.format_exc()))
                return
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        state.close()


class WorkerCrash(RuntimeError):
    """A worker process failed outside any single episode (a bug, or a lost process)."""


class ProcessWorker:
    """A worker in its own process, started fresh ("spawn"): no GL or torch state inherited."""

    def __init__(self, settings: SimSettings):
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child, settings), daemon=True)
        self._process.start()
        child.close()

    def submit(self, ops: list[Start | Run]) -> None:
        """Send one round's operations (returns at once)."""
        self._conn.send(ops)

    def collect(self) -> list[Report]:
        """Wait for the reports of the last `submit`."""
        try:
            status, payload = self._conn.recv()
        except (EOFError, OSError):
            raise WorkerCrash(f"evaluation worker (pid {self._process.pid}) died; exit code "
                              f"{self._process.exitcode}") from None
        if status != "ok":
            raise WorkerCrash(f"evaluation worker (pid {self._process.pid}) failed:\n{payload}")
        return payload

    def close(self) -> None:
        """Stop the process (it closes its simulators first)."""
        try:
            self._conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()
        self._conn.close()


def start_worker(settings: SimSettings, in_process: bool) -> LocalWorker | ProcessWorker:
    """A worker in this process or in a new one."""
    return LocalWorker(settings) if in_process else ProcessWorker(settings)

