"""What the CPU runs: its model, the ISA ATen and oneDNN dispatch to, the thread count.

Speed settings that depend on the CPU (``MODEL.MEMORY_FORMAT``) and every benchmark read
these facts from here, so a speed claim names the machine it was measured on.
"""
import functools
import os
import platform
import sys
import tempfile

import torch


def cpu_model(cpuinfo="/proc/cpuinfo"):
    """The CPU's model name from /proc/cpuinfo with its family and model numbers (a VM often
    shows only "AMD EPYC", and the numbers tell its generation), else what ``platform`` knows."""
    fields = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model") and key not in fields:
                    fields[key] = value.strip()
                if not line.strip() and fields:
                    break  # the first processor's block is enough
    except OSError:
        pass
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        return f"{fields['model name']} (family {fields['cpu family']}, model {fields['model']})"
    return fields["model name"]


def aten_isa():
    """The vector ISA ATen's CPU kernels dispatch to ("AVX512", "AVX2", "DEFAULT", ...)."""
    return torch.backends.cpu.get_cpu_capability()


@functools.lru_cache(maxsize=None)
def onednn_isa():
    """The ISA oneDNN runs its convolutions with, as oneDNN itself reports it (for example
    "Intel AVX-512 with Intel DL Boost and bfloat16 support" or "Intel AVX2"); it honours
    ``ONEDNN_MAX_CPU_ISA``. "unknown" when torch has no oneDNN or it says nothing.

    oneDNN reports its ISA only in verbose mode, on standard output: one small convolution is
    run with verbose on and standard output captured at the file-descriptor level.
    """
    if not torch.backends.mkldnn.is_available():
        return "unknown"
    sys.stdout.flush()
    with tempfile.TemporaryFile() as sink:
        saved_stdout = os.dup(1)
        os.dup2(sink.fileno(), 1)
        try:
            with torch.no_grad(), torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                # large enough for ATen to hand it to oneDNN
                torch.nn.functional.conv2d(torch.zeros(1, 64, 32, 32), torch.zeros(64, 64, 3, 3))
        finally:
            os.dup2(saved_stdout, 1)
            os.close(saved_stdout)
        sink.seek(0)
        report = sink.read().decode(errors="replace")
    for line in report.splitlines():
        if ",isa:" in line:
            return line.split(",isa:", 1)[1].strip()
    return "unknown"


def onednn_has_avx512():
    return "AVX-512" in onednn_isa() or "AMX" in onednn_isa()


def machine_facts():
    """The facts a speed figure needs beside it."""
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "aten_isa": aten_isa(),
        "onednn_isa": onednn_isa(),
        "onednn_max_cpu_isa_env": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "aten_cpu_capability_env": os.environ.get("ATEN_CPU_CAPABILITY", ""),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def describe_machine(facts=None):
    """One line for logs and benchmark tables."""
    facts = facts or machine_facts()
    line = (f"{facts['cpu_model']}, {facts['cpu_count']} CPUs, ATen {facts['aten_isa']}, "
            f"oneDNN {facts['onednn_isa']}, {facts['torch_threads']} threads, torch {facts['torch']}")
    limits = [f"{name}={facts[key]}" for name, key in (("ONEDNN_MAX_CPU_ISA", "onednn_max_cpu_isa_env"),
                                                        ("ATEN_CPU_CAPABILITY", "aten_cpu_capability_env"))
              if facts[key]]
    if limits:
        line += " (limited: " + " ".join(limits) + ")"
    if facts.get("cuda"):
        line += f", GPU {facts['cuda']}"
    return line
