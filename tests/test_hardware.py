import os

import pytest

from bam import hardware


def test_explicit_precision_is_kept():
    assert hardware.resolve_precision("fp32", "cpu") == "fp32"
    assert hardware.resolve_precision("bf16", "cpu") == "bf16"


@pytest.mark.parametrize(("usable", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_picks_bf16_on_cpu_only_where_amx_runs(monkeypatch, usable, expected):
    monkeypatch.setattr(hardware, "amx_usable", lambda: usable)
    assert hardware.resolve_precision("auto", "cpu") == expected


def test_guard_caps_onednn_only_where_amx_is_advertised_but_does_not_run(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(hardware, "_cpu_flags", lambda: frozenset({"avx512f", "amx_bf16"}))
    monkeypatch.setattr(hardware, "amx_usable", lambda: True)
    hardware.guard_onednn()
    assert "ONEDNN_MAX_CPU_ISA" not in os.environ
    monkeypatch.setattr(hardware, "amx_usable", lambda: False)
    hardware.guard_onednn()
    assert os.environ["ONEDNN_MAX_CPU_ISA"] == "AVX512_CORE_FP16"


def test_a_bf16_matrix_product_runs_in_this_process():
    # On machines that advertise AMX without enabling it, this crashed the whole process before the guard.
    import torch

    a = torch.ones(16, 16, dtype=torch.bfloat16)
    assert (a @ a)[0, 0].item() == 16


def test_the_probe_runs_once_and_children_inherit_its_answer(monkeypatch):
    monkeypatch.setattr(hardware, "_cpu_flags", lambda: frozenset({"avx512f", "amx_bf16"}))
    monkeypatch.setattr(hardware.platform, "system", lambda: "Linux")
    monkeypatch.setattr(hardware.platform, "machine", lambda: "x86_64")
    monkeypatch.delenv("BAM_AMX_USABLE", raising=False)
    probes = []

    def probe(*arguments, **options):
        probes.append(arguments)
        return hardware.subprocess.CompletedProcess(arguments, returncode=-4)  # SIGILL

    monkeypatch.setattr(hardware.subprocess, "run", probe)
    hardware.amx_usable.cache_clear()
    try:
        assert hardware.amx_usable() is False and os.environ["BAM_AMX_USABLE"] == f"{hardware._boot_id()}:0"
        hardware.amx_usable.cache_clear()  # as in a child process, which starts with an empty cache
        assert hardware.amx_usable() is False
        assert len(probes) == 1
        # An answer from another machine (a Slurm job inherits its submitter's environment) is probed again.
        monkeypatch.setenv("BAM_AMX_USABLE", "another-machine:1")
        hardware.amx_usable.cache_clear()
        assert hardware.amx_usable() is False
        assert len(probes) == 2
    finally:
        hardware.amx_usable.cache_clear()
