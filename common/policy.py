"""The policy interface the evaluation harness drives, the loader registry, and two reference policies.

A trained policy lives in a directory with a `meta.json` whose `"policy"` key names its loader; a stage that
trains policies registers its loader here (`@register_loader("vla")`) and `load_policy(directory)` finds it.
`expert` (the simulator's scripted experts, reading its state) and `random` are built-in names, built for the
simulator the evaluation runs (`load_policy(name, simulator)`): they prove the harness, one scoring near 100%, the
other near 0.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from common.cli import StageError
from common.config import closest_name
from common.simulators import Simulator, get_simulator

META_FILE = "meta.json"
POLICY_KEY = "policy"  # meta.json key naming the loader


class PolicyError(StageError):
    """A policy cannot be loaded or does not fit the environment; the message says which file and what to do."""


@dataclasses.dataclass(frozen=True)
class Observation:
    """A batch of B environments at a re-plan step."""

    images: dict[str, np.ndarray]  # camera -> (B, H, W, 3) uint8, upright, exactly as collect stores them
    proprio: np.ndarray  # (B, P) float32, the simulator's proprio_keys order, as collect stores it
    instructions: tuple[str, ...]  # the simulator's instruction per env
    tasks: tuple[str, ...]  # the simulator's task name per env
    states: np.ndarray  # (B, obs_dim) the simulator's raw state observations (reference policies only)

    @property
    def batch(self) -> int:
        """Number of environments B."""
        return len(self.tasks)


@runtime_checkable
class Policy(Protocol):
    """What the harness needs of a policy: a chunk of actions per call, for a batch of environments."""

    chunk: int  # K actions returned per call
    cameras: tuple[str, ...]  # cameras to render for it (empty: the harness renders nothing)
    image_size: int

    def act(self, obs: Observation) -> np.ndarray:
        """(B, chunk, action_dim) float32 actions in environment units."""
        ...


# A loader builds a policy from its directory and the parsed meta.json.
Loader = Callable[[Path, dict[str, Any]], Policy]
_LOADERS: dict[str, Loader] = {}
_BUILTINS: dict[str, Callable[[Simulator], Policy]] = {}


def register_loader(name: str) -> Callable[[Loader], Loader]:
    """Decorator: `@register_loader("vla")` on `load(directory, meta) -> Policy` for meta.json `"policy": "vla"`."""

    def wrap(fn: Loader) -> Loader:
        if name in _LOADERS and _LOADERS[name] is not fn:
            raise ValueError(f"a policy loader named {name!r} is already registered ({_LOADERS[name]!r})")
        _LOADERS[name] = fn
        return fn

    return wrap


def builtin_names() -> tuple[str, ...]:
    """Names `load_policy` accepts without a directory."""
    return tuple(sorted(_BUILTINS))


def read_policy_meta(directory: Path) -> dict[str, Any]:
    """The parsed meta.json of a policy directory; a missing or garbled file is a PolicyError."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise PolicyError(f"{path}: no such file; {directory} is not a policy directory. "
                          f"Next step: train the policy (e.g. `dvc repro finetune`) or pass one of {builtin_names()}")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: not valid JSON ({exc}); the file is corrupt. "
                          "Next step: delete the policy directory and retrain it") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get(POLICY_KEY), str):
        raise PolicyError(f"{path}: field {POLICY_KEY!r} is missing or not a string (value "
                          f"{meta.get(POLICY_KEY) if isinstance(meta, dict) else meta!r}); it must name the loader, "
                          f"one of {sorted(_LOADERS)}. Next step: retrain the policy with the current code")
    return meta


def is_builtin(dir_or_name: str | Path) -> bool:
    """Whether `load_policy` reads this as a built-in name (a directory of that name wins)."""
    return str(dir_or_name) in _BUILTINS and not Path(dir_or_name).is_dir()


def _existing_dir(dir_or_name: str | Path) -> Path:
    """The policy directory, or a PolicyError that suggests the closest built-in name."""
    directory = Path(dir_or_name)
    if not directory.is_dir():
        hint = closest_name(directory.name, _BUILTINS)
        raise PolicyError(f"policy {str(dir_or_name)!r}: neither a directory nor a built-in policy {builtin_names()}"
                          + (f" (did you mean {hint!r}?)" if hint else "")
                          + ". Next step: pass a trained policy directory, e.g. models/finetune/<strategy>-<seed>")
    return directory


def policy_meta(dir_or_name: str | Path) -> dict[str, Any]:
    """The metadata of a policy: its meta.json, or `{"policy": name}` for a built-in."""
    return {POLICY_KEY: str(dir_or_name)} if is_builtin(dir_or_name) else read_policy_meta(_existing_dir(dir_or_name))


def load_policy(dir_or_name: str | Path, simulator: str | None = None) -> Policy:
    """A built-in policy by name for `simulator` (required), or a trained one from its directory (its meta.json
    names the loader)."""
    text = str(dir_or_name)
    if is_builtin(text):
        if simulator is None:
            raise PolicyError(f"the built-in policy {text!r} acts in a simulator and none was named. Next step: "
                              f"call load_policy({text!r}, simulator) with the dataset's env, e.g. 'metaworld'")
        return _BUILTINS[text](get_simulator(simulator))
    directory = _existing_dir(dir_or_name)
    meta = read_policy_meta(directory)
    name = meta[POLICY_KEY]
    _import_known_loaders()
    if name not in _LOADERS:
        hint = closest_name(name, _LOADERS)
        raise PolicyError(f"{directory / META_FILE}: {POLICY_KEY} = {name!r} names no registered loader "
                          f"(known: {sorted(_LOADERS)})" + (f"; did you mean {hint!r}?" if hint else ""))
    try:
        policy = _LOADERS[name](directory, meta)
    except PolicyError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, EOFError, pickle.UnpicklingError,
            zipfile.BadZipFile) as exc:
        raise PolicyError(f"{directory}: the {name!r} loader failed ({type(exc).__name__}: {exc}); the checkpoint "
                          "is corrupt or was written by other code. Next step: retrain it") from exc
    if not isinstance(policy, Policy):
        raise PolicyError(f"{directory}: the {name!r} loader returned {type(policy).__name__}, not a Policy")
    return policy


def _import_known_loaders() -> None:
    """Import the modules that register loaders, so a caller need not know which stage wrote the policy."""
    import importlib
    import importlib.util

    for module in ("common.vla.policy", "common.reference.policy"):
        parent = module.rsplit(".", 1)[0]
        if importlib.util.find_spec(parent) is not None and importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


def check_actions(actions: Any, obs: Observation, chunk: int, action_dim: int, who: str) -> np.ndarray:
    """The policy's output as float32 (B, chunk, action_dim), or a PolicyError saying what was wrong."""
    arr = np.asarray(actions)
    expected = (obs.batch, chunk, action_dim)
    if arr.shape != expected:
        raise PolicyError(f"policy {who}: act returned shape {arr.shape}, expected {expected} "
                          f"(batch, chunk, action_dim); its action dim must be the environment's {action_dim}. "
                          "Next step: retrain it for this environment's action space")
    return arr.astype(np.float32, copy=False)


def camera_images(obs: Observation, cameras: tuple[str, ...], image_size: int, who: str) -> np.ndarray:
    """The observation's images of `cameras` as (B, cams, H, W, 3), or a PolicyError naming what does not match."""
    missing = [c for c in cameras if c not in obs.images]
    if missing:
        raise PolicyError(f"{who}: the policy needs cameras {list(cameras)}, the observation lacks {missing}. "
                          "Next step: render the cameras the policy names")
    images = np.stack([obs.images[c] for c in cameras], axis=1)
    if images.shape[2:4] != (image_size, image_size):
        raise PolicyError(f"{who}: images are {images.shape[2:4]}, the policy was trained on "
                          f"{image_size}x{image_size}. Next step: render at policy.image_size")
    return images


class ExpertPolicy:
    """The simulator's scripted expert for each environment's task, one step per call (it reads the state)."""

    chunk = 1
    cameras: tuple[str, ...] = ()
    image_size = 0

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator
        self._experts: dict[str, Any] = {}
        self._low, self._high = np.array(simulator.action_space.low), np.array(simulator.action_space.high)

    def act(self, obs: Observation) -> np.ndarray:
        """The expert's action for each environment, clipped to the action space: (B, 1, A)."""
        rows = []
        for task, state in zip(obs.tasks, obs.states):
            if task not in self._experts:
                expert = self.simulator.expert(task)
                if expert is None:
                    raise PolicyError(f"policy expert: simulator {self.simulator.name!r} has no scripted expert "
                                      f"for task {task!r}. Next step: evaluate a trained policy on it instead")
                self._experts[task] = expert
            rows.append(np.clip(self._experts[task].get_action(state), self._low, self._high))
        return np.stack(rows).astype(np.float32)[:, None]  # (B, 1, A)


class RandomPolicy:
    """Uniform random actions; seeded by each environment's own state, so a batch's make-up changes nothing."""

    chunk = 8
    cameras: tuple[str, ...] = ()
    image_size = 0

    def __init__(self, simulator: Simulator, seed: int = 0) -> None:
        self.seed = seed
        self._dim = simulator.action_space.dim
        self._low, self._high = np.array(simulator.action_space.low), np.array(simulator.action_space.high)

    def act(self, obs: Observation) -> np.ndarray:
        """(B, chunk, A) uniform in the action bounds."""
        out = np.empty((obs.batch, self.chunk, self._dim), np.float32)
        for i, state in enumerate(obs.states):
            rng = np.random.default_rng([self.seed, zlib.crc32(np.ascontiguousarray(state).tobytes())])
            out[i] = rng.uniform(self._low, self._high, (self.chunk, self._dim))
        return out


_BUILTINS["expert"] = ExpertPolicy
_BUILTINS["random"] = RandomPolicy
