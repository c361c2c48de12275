"""Peak numbers of the accelerators ``rar-compile`` plans for, and the chip of a running device.

Each entry is the vendor's published per-chip figure (dense bf16 matmul FLOP/s, HBM bandwidth
and capacity), from the page named in ``source``. Peaks are upper bounds: a roofline time from
them is the fastest a program could run, never a prediction of what it will take. GPU entries
estimate a GPU run from the program compiled for a TPU topology of the same number of chips;
XLA's GPU compiler fuses and lays out differently, so ``rar-compile`` marks them as estimates.
"""

from __future__ import annotations

import dataclasses

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
    """One accelerator chip.

    Attributes:
        name: our short name (the prefix of a TPU topology name: ``v5p`` in ``v5p:2x2x1``).
        bf16_flops: peak dense bf16 matmul FLOP/s per chip.
        hbm_bytes_per_s: peak HBM bandwidth per chip, bytes/s.
        hbm_bytes: HBM capacity per chip, bytes.
        device_kinds: ``jax.Device.device_kind`` strings of this chip (to find its peak at run time).
        source: where the figures are published.
        tpu: True for a TPU (compiled for directly); False for a GPU (estimated).
    """

    name: str
    bf16_flops: float
    hbm_bytes_per_s: float
    hbm_bytes: float
    device_kinds: tuple[str, ...]
    source: str
    tpu: bool = True

    def roofline_seconds(self, flops: float, bytes_accessed: float) -> float:
        """The roofline lower bound of a program's time on one chip: compute or memory bound."""
        return max(flops / self.bf16_flops, bytes_accessed / self.hbm_bytes_per_s)


CHIPS: dict[str, Chip] = {chip.name: chip for chip in (
    Chip("v4", 275e12, 1200e9, 32 * GIB, ("TPU v4",),
         "cloud.google.com/tpu/docs/v4 (275 TFLOP/s bf16, 32 GiB HBM2 at 1,200 GB/s)"),
    Chip("v5e", 197e12, 819e9, 16 * GIB, ("TPU v5 lite", "TPU v5e"),
         "cloud.google.com/tpu/docs/v5e (197 TFLOP/s bf16, 16 GiB HBM2 at 819 GB/s)"),
    Chip("v5p", 459e12, 2765e9, 95 * GIB, ("TPU v5p", "TPU v5"),
         "cloud.google.com/tpu/docs/v5p (459 TFLOP/s bf16, 95 GiB HBM2e at 2,765 GB/s)"),
    Chip("v6e", 918e12, 1640e9, 32 * GIB, ("TPU v6 lite", "TPU v6e"),
         "cloud.google.com/tpu/docs/v6e (918 TFLOP/s bf16, 32 GiB HBM at 1,640 GB/s)"),
    Chip("h100", 989e12, 3350e9, 80e9, ("NVIDIA H100 80GB HBM3", "NVIDIA H100"),
         "NVIDIA H100 SXM datasheet (989 TFLOP/s dense bf16, 80 GB HBM3 at 3.35 TB/s)",
         tpu=False),
    Chip("h200", 989e12, 4800e9, 141e9, ("NVIDIA H200",),
         "NVIDIA H200 SXM datasheet (989 TFLOP/s dense bf16, 141 GB HBM3e at 4.8 TB/s)",
         tpu=False),
)}


def chip_of_topology(topology: str) -> Chip:
    """The chip of a TPU topology name (``v5p:2x2x1`` -> v5p) or a GPU name (``h100:8``).

    Raises:
        ValueError: naming the known chips.
    """
    name = topology.split(":", 1)[0].lower()
    if name not in CHIPS:
        raise ValueError(f"unknown chip {name!r} in {topology!r}; expected one of "
                         f"{', '.join(CHIPS)}")
    return CHIPS[name]


def chip_of_device_kind(device_kind: str) -> Chip | None:
    """The chip whose ``device_kind`` is ``device_kind`` (None for a CPU or an unlisted chip)."""
    for chip in CHIPS.values():
        if device_kind in chip.device_kinds:
            return chip
    return None


def peak_flops_per_device(configured: float, device_kind: str) -> float:
    """The peak FLOP/s that MFU is measured against (``metrics.peak_flops_per_device``): the
    configured value when > 0, the chip's bf16 peak for -1 (0 for a CPU or an unlisted chip),
    0 (not reported) for 0."""
    if configured > 0:
        return configured
    chip = chip_of_device_kind(device_kind) if configured == -1 else None
    return chip.bf16_flops if chip is not None else 0.0
