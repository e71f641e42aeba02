"""What the hardware can do fast, decided once at start-up.

Some virtual machines advertise Intel AMX in /proc/cpuinfo but do not let
processes use its tile registers (the kernel's XTILEDATA permission is
missing). oneDNN then picks AMX kernels for bf16 matrix products and the
process dies with "Illegal instruction". `guard_onednn` caps oneDNN below AMX
on such machines, and `resolve_precision` uses bf16 only where it is fast:
CUDA GPUs with bf16, and CPUs whose AMX is usable. Elsewhere bf16 on CPU is
emulated with AVX-512 and measured slower than fp32 (see README).
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

_ARCH_GET_XCOMP_SUPP = 0x1022
_XFEATURE_XTILEDATA = 18
_SYS_ARCH_PRCTL = 158


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
    """Whether this process may use AMX tiles: advertised by the CPU and permitted by the kernel."""
    if platform.system() != "Linux" or platform.machine() != "x86_64" or "amx_bf16" not in _cpu_flags():
        return False
    supported = ctypes.c_ulong(0)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_SYS_ARCH_PRCTL, _ARCH_GET_XCOMP_SUPP, ctypes.byref(supported)) != 0:
        return False
    return bool(supported.value >> _XFEATURE_XTILEDATA & 1)


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
