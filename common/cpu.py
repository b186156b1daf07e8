"""torch's CPU kernels pinned to one instruction set, so that a CPU run writes the same bytes on any x86-64 CPU.

torch chooses its CPU kernels by instruction set when they are first used: ATen's vectorized operators
(`ATEN_CPU_CAPABILITY`), oneDNN's convolutions (`ONEDNN_MAX_CPU_ISA`) and MKL's matrix products (`MKL_CBWR`, MKL's
conditional numerical reproducibility); NumPy does the same for its own loops (`NPY_DISABLE_CPU_FEATURES`) and its
OpenBLAS (`OPENBLAS_CORETYPE`). An AVX-512 kernel rounds differently from an AVX2 one, so without the pins a
training run's weights differ bit for bit between CPU generations (docs/reproducibility.md). `pin_cpu_kernels` sets
all of them to AVX2, a floor nearly every x86-64 CPU meets. common/__init__.py calls it, and every process of the
study imports common before torch: each stage (`python -m stages.<name>`, under DVC or not: stages/__init__.py
imports common) and the flow (`python -m flows`).

- A value already in the environment wins (os.environ.setdefault); `LASD_CPU_PINS=0` sets none (faster on an
  AVX-512 CPU, not reproducible elsewhere). What is in force is recorded: `kernel_settings` in each stage's MLflow
  tags, `kernel_pins` in meta.json.
- Only on x86-64 CPUs with AVX2 and FMA (torch's own condition for its AVX2 kernels). ATen takes
  ATEN_CPU_CAPABILITY=avx2 without asking the CPU, so on an older one it would stop with an illegal instruction;
  on arm64 and other CPUs the x86 names mean nothing (ATen warns and ignores them): there nothing is set.
- The environment is read once per process: by torch when it first dispatches, by NumPy when it is imported. A
  process that ran torch before importing common keeps what torch chose then, and `pin_cpu_kernels` warns when
  that differs from the pin; one that imported NumPy first keeps NumPy's own dispatch, and is warned too.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import shlex
import sys

log = logging.getLogger(__name__)

# The instruction set of each library, at AVX2, spelled as each library spells it. torch's three, then NumPy's two:
# NumPy dispatches its own SIMD loops (float64 exp, log and power round differently in its AVX-512 ones, measured)
# and ships its own OpenBLAS, which picks kernels by CPU model (Haswell: its AVX2 set). The NumPy names are those of
# numpy 2.x (constraints.txt); an older NumPy ignores unknown names with an ImportWarning.
PINS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2",
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR", "OPENBLAS_CORETYPE": "Haswell"}
OPT_OUT_ENV = "LASD_CPU_PINS"  # "0": pin nothing
# Every variable that decides the CPU kernels when a library first loads or runs, as each stage's MLflow tags record
# them (kernel_settings). DNNL_ is oneDNN's older prefix; MKL_ENABLE_INSTRUCTIONS caps MKL; NPY_ENABLE_CPU_FEATURES
# is NumPy's other switch.
KERNEL_ENV = (*PINS, "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "NPY_ENABLE_CPU_FEATURES", OPT_OUT_ENV)
_X86_64 = ("x86_64", "amd64")
_AVX2_FLAGS = {"avx2", "fma"}  # torch's AVX2 kernels need both (cpuinfo_has_x86_avx2 and _fma3)


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's entry of /proc/cpuinfo (empty where there is none: macOS, Windows)."""
    entry: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    break  # the first processor is enough; a 256-core machine lists it 256 times
                key, _, value = line.partition(":")
                entry[key.strip()] = value.strip()
    except OSError:
        pass
    return entry


def cpu_model() -> str:
    """The CPU's model name, e.g. 'AMD EPYC 9R14' (/proc/cpuinfo, else what platform reports)."""
    info = _cpuinfo()
    return info.get("model name") or info.get("Hardware") or platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> set[str] | None:
    """The CPU's instruction-set flags from /proc/cpuinfo; None where they cannot be read."""
    info = _cpuinfo()
    flags = info.get("flags") or info.get("Features")
    return set(flags.split()) if flags is not None else None


def pins_for(machine: str, flags: set[str] | None) -> dict[str, str]:
    """The pins that make sense on a CPU: all of PINS on an x86-64 CPU with AVX2 and FMA (or whose flags are
    unknown), none elsewhere."""
    if machine.lower() not in _X86_64 or (flags is not None and not _AVX2_FLAGS <= flags):
        return {}
    return dict(PINS)


def pin_cpu_kernels() -> dict[str, str]:
    """Set the pins this CPU supports where the environment has no value yet; return the ones set now."""
    if os.environ.get(OPT_OUT_ENV) == "0":
        return {}
    machine, flags = platform.machine(), cpu_flags()
    pins = pins_for(machine, flags)
    if not pins and machine.lower() in _X86_64:
        log.warning("CPU %s has no AVX2+FMA: torch's and NumPy's CPU kernels are not pinned (common/cpu.py), so "
                    "outputs will differ from those of AVX2 machines and from dvc.lock", cpu_model())
    added = {name: value for name, value in pins.items() if name not in os.environ}
    os.environ.update(added)
    if "NPY_DISABLE_CPU_FEATURES" in added and "numpy" in sys.modules:
        log.warning("numpy was imported before common/ could pin its CPU kernels: its loops follow this CPU's "
                    "instruction set, so this process's results may not match other machines' bit for bit. Import "
                    "common first, or export %s", _exports())
    if added and "torch" in sys.modules:
        _warn_if_too_late()
    return added


def _warn_if_too_late() -> None:
    """torch was imported before the pins were set: say so if ATen already follows another instruction set."""
    import torch

    in_force, wanted = torch.backends.cpu.get_cpu_capability().lower(), os.environ["ATEN_CPU_CAPABILITY"].lower()
    if in_force != wanted:
        log.warning("torch was imported before common/ could pin its CPU kernels: ATen runs %s kernels, not %s, so "
                    "this process's results will not match other machines' bit for bit. Import common (or run "
                    "`python -m stages.<name>`) before torch, or export %s", in_force, wanted, _exports())


def _exports() -> str:
    """The pins as shell assignments."""
    return " ".join(f"{name}={shlex.quote(value)}" for name, value in PINS.items())


def capability_in_force(load: bool = False) -> str | None:
    """ATen's instruction set in this process ('avx2', 'avx512', 'default', ...); None when torch is not imported
    (and `load` is false: importing torch costs seconds)."""
    if "torch" not in sys.modules and not load:
        return None
    import torch

    return torch.backends.cpu.get_cpu_capability().lower()


def kernel_pins() -> dict[str, str]:
    """The kernel settings in force, for meta.json: the same on every machine where the pins hold, so DVC's hash
    of a model directory does not depend on the CPU (the CPU model is left out on purpose)."""
    pins = {name: os.environ.get(name, "") for name in PINS}
    pins["ATEN_CPU_CAPABILITY"] = capability_in_force(load=True) or ""
    return pins


def pinned() -> bool:
    """Whether this process runs under the pins: every pin in the environment and ATen following it."""
    capability = capability_in_force()
    return (all(os.environ.get(name) == value for name, value in PINS.items())
            and capability in (None, PINS["ATEN_CPU_CAPABILITY"]))


def kernel_settings() -> dict[str, str]:
    """What decides this process's CPU kernels, as MLflow tags: the CPU model and architecture, ATen's capability
    in force, the kernel variables of the environment, and whether the pins hold."""
    tags = {"cpu.model": cpu_model(), "cpu.machine": platform.machine(),
            "cpu.capability": capability_in_force() or "torch not imported", "cpu.pinned": str(pinned()).lower()}
    tags.update({f"cpu.env.{name}": os.environ.get(name, "unset") for name in KERNEL_ENV})
    return tags
