"""The convolution memory layout for training and for inference (``MODEL.MEMORY_FORMAT``).

Channels-last (NHWC) and contiguous (NCHW) give the same model and the same results; only
the speed differs, and it differs by CPU. Measured with ``benchmarks/bench_speed.py`` on one
2-core AMD EPYC VM, native (oneDNN AVX-512) and limited to AVX2 (``benchmarks/README.md``):

- training: channels-last took 7-20% less time than NCHW with AVX-512, but 1.25-1.9x as much
  with AVX2 only, where oneDNN's channels-last backward convolutions are slow;
- inference: channels-last took 7-19% less time with either ISA.

"auto" therefore trains channels-last on CUDA and on CPUs whose oneDNN runs AVX-512 (or
AMX), contiguous elsewhere, and infers channels-last on CUDA and x86 CPUs with AVX2 or
better.
"""
import logging

import torch

from ustumor.utils.cpu import onednn_has_avx512, onednn_isa

logger = logging.getLogger(__name__)

FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def _auto(phase, device):
    if str(device).startswith("cuda"):
        return "channels_last"
    if phase == "train":
        return "channels_last" if onednn_has_avx512() else "contiguous"
    return "channels_last" if onednn_has_avx512() or "AVX2" in onednn_isa() else "contiguous"


def resolve_memory_format(name, phase, device):
    """``MODEL.MEMORY_FORMAT.TRAIN``/``TEST`` (``phase`` "train"/"test") as a torch memory format."""
    chosen = _auto(phase, device) if name == "auto" else name
    if chosen not in FORMATS:
        raise ValueError(f"MODEL.MEMORY_FORMAT.{phase.upper()} {name!r}: expected 'auto', "
                         + " or ".join(repr(f) for f in FORMATS))
    if name == "auto":
        logger.info("MODEL.MEMORY_FORMAT.%s auto: %s (device %s, oneDNN ISA %s)",
                    phase.upper(), chosen, device, onednn_isa())
    return FORMATS[chosen]
