"""Shared library of the latent-action study: configuration, dataset I/O, simulation, tracking.

Importing it first pins torch's CPU kernels to AVX2 (common/cpu.py), before any module here imports torch: every
stage and the flow import common, so their CPU outputs are the same bytes on any x86-64.
"""

from common.cpu import pin_cpu_kernels

pin_cpu_kernels()
