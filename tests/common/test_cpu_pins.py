"""torch's CPU kernels are pinned to AVX2 (common/cpu.py) in every process that imports common before torch.

The check that matters: a tiny finetune under the pins gives the same bytes as under the pins plus every stricter
cap the libraries offer; a kernel still following this CPU's own instruction set would change them. Each training
runs in its own process (`python -m tests.common.test_cpu_pins` prints its weight hash), because torch reads the
variables once per process.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common import cpu
from common.tracking import StageRun, TrackingParams, resolve_tracking_uri

ROOT = Path(__file__).resolve().parents[2]
# The AVX2 floor set explicitly and through every other knob: MKL's instruction cap and its thread-count-proof CNR
# mode, oneDNN's older variable. Spelled out rather than taken from cpu.PINS, so that a pin dropped there is caught.
STRICTER = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2",
            "MKL_CBWR": "AVX2,STRICT", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
            "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR", "OPENBLAS_CORETYPE": "Haswell"}


def train_and_hash(steps: int = 10) -> dict[str, str]:
    """A tiny seeded training on one thread (conv2d/conv3d, embedding, linear, GELU, LayerNorm, attention, softmax,
    AdamW), as a finetune uses them, after some float64 NumPy (exp, log, power, matrix products, as statistics and
    probes use them); the sha256 of its weights and NumPy's results, and ATen's capability."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    x, a = rng.normal(size=4096) * 3, rng.normal(size=(96, 96))
    gram = a.T @ a + 1e-3 * np.eye(96)
    statistics = [np.exp(x), np.log(np.abs(x) + 1e-3), np.abs(x) ** 1.7, gram, np.linalg.solve(gram, a[0])]

    torch.manual_seed(0)
    torch.set_num_threads(1)
    patch = torch.nn.Conv3d(3, 16, (2, 4, 4), stride=(2, 4, 4))  # the VLA's patch embedding
    stem = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
    embed = torch.nn.Embedding(50, 64)
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 64),
                              torch.nn.LayerNorm(64))
    attention = torch.nn.MultiheadAttention(64, 4, batch_first=True)
    head = torch.nn.Linear(64, 50)
    modules = [patch, stem, embed, mlp, attention, head]
    weights = [p for m in modules for p in m.parameters()]
    optimizer = torch.optim.AdamW(weights, lr=1e-3)
    video, images = torch.randn(4, 3, 2, 16, 16), torch.randn(4, 3, 16, 16)
    ids = torch.randint(0, 50, (4, 12))
    for _ in range(steps):
        vision = patch(video).flatten(2).transpose(1, 2)  # (B, 16, 16)
        vision = torch.cat([vision, stem(images).flatten(2).transpose(1, 2)[:, :16]], -1).repeat(1, 1, 2)  # (B, 16, 64)
        tokens = torch.cat([vision, embed(ids)], 1)  # (B, 28, 64)
        hidden = mlp(tokens)
        hidden = hidden + attention(hidden, hidden, hidden, need_weights=False)[0]
        logits = head(hidden[:, -12:])  # (B, 12, 50)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 50), ids.flatten())
        loss = loss + logits.softmax(-1).square().mean() + torch.tanh(hidden).exp().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    digest = hashlib.sha256()
    for array in [*statistics, *(weight.detach().numpy() for weight in weights)]:
        digest.update(array.tobytes())
    return {"sha256": digest.hexdigest(), "capability": torch.backends.cpu.get_cpu_capability().lower()}


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any kernel variable (pytest imported common, which set the pins)."""
    env = {k: v for k, v in os.environ.items() if k not in (*cpu.KERNEL_ENV, *STRICTER)}
    return {**env, **extra}


def run_training(env: dict[str, str]) -> dict[str, str]:
    done = subprocess.run([sys.executable, "-m", "tests.common.test_cpu_pins"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def has_avx512() -> bool:
    """Whether this CPU has the AVX-512 subset for which ATen picks its AVX512 kernels."""
    return {"avx512f", "avx512vl", "avx512bw", "avx512dq"} <= (cpu.cpu_flags() or set())


@pytest.mark.skipif(not cpu.pins_for(cpu.platform.machine(), cpu.cpu_flags()), reason="no pins on this CPU: "
                    "not an x86-64 with AVX2+FMA (common/cpu.py)")
def test_no_kernel_follows_the_cpus_own_instruction_set_under_the_pins() -> None:
    pinned = run_training(clean_env())  # the pins as common/__init__.py sets them
    stricter = run_training(clean_env(**STRICTER))
    assert pinned["capability"] == stricter["capability"] == "avx2"
    assert pinned["sha256"] == stricter["sha256"], "some CPU kernel still follows this CPU's instruction set"
    if not has_avx512():
        pytest.skip("this CPU has no AVX-512: its own kernels are AVX2 ones, so the pins change nothing here")
    native = run_training(clean_env(**{cpu.OPT_OUT_ENV: "0"}))
    assert native["capability"] == "avx512"
    assert native["sha256"] != pinned["sha256"], "on an AVX-512 CPU, the unpinned kernels should round differently"


@pytest.mark.parametrize("module", ["stages.finetune", "flows"])
def test_the_pins_are_set_before_torch_is_imported(module: str) -> None:
    """`python -X importtime` lists each import when it completes, nested under the one that caused it: `common` at
    the top level of the stage's or flow's tree, and before torch's, means torch came after the pins."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", module, "--help"], cwd=ROOT, env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    order = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert "common.cpu" in order
    if "torch" in order:
        assert order.index("common") < order.index("torch")


def test_a_stage_process_runs_under_the_pins() -> None:
    code = ("import stages.finetune, json, os, torch; from common import cpu; "
            "print(json.dumps({'capability': torch.backends.cpu.get_cpu_capability(), 'pinned': cpu.pinned(), "
            "'env': {k: os.environ.get(k) for k in cpu.PINS}}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    expected = cpu.pins_for(cpu.platform.machine(), cpu.cpu_flags())
    assert seen["env"] == {k: expected.get(k) for k in cpu.PINS}
    if expected:
        assert seen["capability"] == "AVX2" and seen["pinned"]


def test_importing_torch_first_is_reported() -> None:
    code = "import torch; torch.ones(3).exp(); import common"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    if cpu.pins_for(cpu.platform.machine(), cpu.cpu_flags()):
        assert "numpy was imported before common/ could pin its CPU kernels" in done.stderr  # torch imports numpy
    if has_avx512():  # only there does the capability torch chose differ from the pin
        assert "torch was imported before common/ could pin its CPU kernels" in done.stderr


def test_a_value_in_the_environment_wins(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    for name in cpu.KERNEL_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cpu.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(cpu, "cpu_flags", lambda: {"avx2", "fma"})
    monkeypatch.setattr(cpu, "_warn_if_too_late", lambda: None)  # this process's torch chose long ago
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    import numpy  # noqa: F401  (as in a process that imported it before common)

    assert cpu.pin_cpu_kernels() == {k: v for k, v in cpu.PINS.items() if k != "MKL_CBWR"}
    assert os.environ["MKL_CBWR"] == "COMPATIBLE"
    assert "numpy was imported before common/" in caplog.text
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    monkeypatch.setenv(cpu.OPT_OUT_ENV, "0")
    assert cpu.pin_cpu_kernels() == {} and "ATEN_CPU_CAPABILITY" not in os.environ


def test_pins_only_where_they_make_sense() -> None:
    assert cpu.pins_for("x86_64", {"sse2", "avx", "avx2", "fma"}) == cpu.PINS
    assert cpu.pins_for("AMD64", None) == cpu.PINS  # flags unknown (Windows): x86-64 CPUs without AVX2 are rare
    assert cpu.pins_for("x86_64", {"sse2", "avx"}) == {}  # ATen would run AVX2 code there: an illegal instruction
    assert cpu.pins_for("aarch64", {"fp", "asimd", "sve"}) == {}  # the x86 names mean nothing there
    assert cpu.pins_for("arm64", None) == {}


def test_provenance_records_the_settings_in_force() -> None:
    meta = cpu.kernel_pins()  # imports torch, as a stage writing meta.json has
    tags = cpu.kernel_settings()
    assert tags["cpu.model"] and tags["cpu.model"] != "unknown"
    assert set(meta) == set(cpu.PINS) and "model" not in json.dumps(meta)
    assert meta["ATEN_CPU_CAPABILITY"] == tags["cpu.capability"]
    if cpu.pins_for(cpu.platform.machine(), cpu.cpu_flags()) and os.environ.get(cpu.OPT_OUT_ENV) != "0":
        assert meta == cpu.PINS and tags["cpu.pinned"] == "true"
        assert {tags[f"cpu.env.{k}"] for k in cpu.PINS} == set(cpu.PINS.values())


def test_each_stage_run_is_tagged_with_its_kernels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = TrackingParams(enabled=True, uri="", experiment="unit")
    with StageRun("finetune", {}, params, root=tmp_path) as run:
        pass
    tags = mlflow.MlflowClient(resolve_tracking_uri(params, tmp_path)).get_run(run.run_id).data.tags
    expected = cpu.kernel_settings()
    assert {"cpu.model", "cpu.capability", "cpu.pinned", *(f"cpu.env.{k}" for k in cpu.PINS)} <= set(expected)
    assert {k: tags.get(k) for k in expected} == expected


if __name__ == "__main__":
    print(json.dumps(train_and_hash()))
