"""What the hardware can do fast, decided once at start-up.

Some virtual machines advertise Intel AMX in /proc/cpuinfo but do not let
processes use its tile registers. oneDNN then picks AMX kernels for bf16
matrix products and the process dies with "Illegal instruction".
`guard_onednn` caps oneDNN below AMX on such machines, and
`resolve_precision` uses bf16 only where it is fast: CUDA GPUs with bf16, and
CPUs whose AMX really runs. Elsewhere bf16 on CPU goes through AVX-512 and was
measured slower than fp32 (see README). Whether AMX runs is tried once, in a
child process, and the answer handed to bam's own child processes in the
environment variable BAM_AMX_USABLE (`<boot id>:1` or `<boot id>:0`).
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from pathlib import Path

# Where a probe's answer is handed to child processes.
_ANSWER = "BAM_AMX_USABLE"

# Run in a child process: where AMX is advertised but not enabled, this dies of SIGILL.
_PROBE = "import torch; a = torch.ones(64, 64, dtype=torch.bfloat16); print((a @ a).sum().item())"


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def amx_usable() -> bool:
    """Whether bf16 matrix products on AMX really run here, tried once in a child process.

    The kernel's permission calls are no guide: on the Firecracker VMs this was
    written on, AMX is advertised and the permission granted, yet the first tile
    instruction raises SIGILL.
    """
    if platform.system() != "Linux" or platform.machine() != "x86_64" or "amx_bf16" not in _cpu_flags():
        return False
    machine = _boot_id()
    known, _, answer = os.environ.get(_ANSWER, "").rpartition(":")
    if known == machine and answer in ("0", "1"):  # probed already, on this machine, by the process that started this one
        return answer == "1"
    environment = {key: value for key, value in os.environ.items() if key != "ONEDNN_MAX_CPU_ISA"}
    try:
        usable = subprocess.run([sys.executable, "-c", _PROBE], env=environment, capture_output=True, timeout=300).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        usable = False
    # The probe costs about 2 s; sweep workers and DDP ranks inherit the answer instead of probing again.
    # The answer names its machine: a Slurm job inherits the environment of the node that submitted it.
    os.environ[_ANSWER] = f"{machine}:{int(usable)}"
    return usable


def _boot_id() -> str:
    """This machine's identity since its last boot (Linux)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return platform.node()


def guard_onednn() -> None:
    """Keep oneDNN off AMX where the CPU advertises it but the kernel does not allow it."""
    if "amx_bf16" in _cpu_flags() and not amx_usable():
        os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_FP16")


def resolve_precision(precision: str, device_type: str) -> str:
    """'bf16' or 'fp32' for a recipe's 'auto', 'bf16' or 'fp32' on this device."""
    if precision != "auto":
        return precision
    if device_type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if amx_usable() else "fp32"
