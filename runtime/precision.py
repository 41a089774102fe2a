"""The arithmetic a torch model runs in on the CPU: fp32, or bf16 through ``torch.autocast``.

bf16 halves the bytes every matrix multiply and convolution moves, and CPUs with AMX tiles (``amx_bf16``)
or AVX-512 BF16 (``avx512_bf16``) multiply bf16 natively; elsewhere (an AVX2-only CPU, say) bf16 is
emulated and far slower than fp32. It pays only where the matrix multiplies are large: an SD1.5-sized
UNet ran 1.8x faster per row in bf16 on an AVX-512 BF16 CPU, the toy's small one 0.8x (its time goes to
casts and small kernels). So ``auto`` is bf16 on such a CPU for a denoiser of at least
``BF16_MIN_PARAMETERS`` weights and fp32 everywhere else; the measurements behind it and bf16's fidelity
on the toy are in docs/benchmarks.md ("Lower precision on the CPU"). Norms, softmax and the sampler's own
arithmetic stay fp32 (autocast's rules); outputs are fp32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import torch

from .choices import PRECISIONS
from .errors import ConfigError


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of Linux's /proc/cpuinfo (empty where it is not there)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor's block ends
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty where /proc/cpuinfo is not there)."""
    return frozenset(_cpuinfo().get("flags", "").split())


def cpu_name() -> str:
    """The CPU's model name and the instruction sets that matter here (what a benchmark's machine line says)."""
    name = _cpuinfo().get("model name", "unknown CPU")
    flags = cpu_flags()
    sets = [s for s in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16") if s in flags]
    return f"{name} ({', '.join(sets) or 'no AVX2'})"


# The smallest denoiser (in weights) that ``auto`` runs in bf16. Measured points, per denoiser row, bf16 vs fp32
# on an AVX-512 BF16 CPU: the toy (1.7 M weights) 0.82x, sd15-random at 256² (860 M) 1.82x; no size in
# between was measured, so the bound sits well above the toy, below every Stable Diffusion denoiser.
BF16_MIN_PARAMETERS = 100_000_000

NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})  # Linux's names for bf16 multiplies in hardware


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU multiplies bf16 in hardware (AMX tiles or AVX-512 BF16)."""
    return bool(NATIVE_BF16_FLAGS & (cpu_flags() if flags is None else flags))


def resolve_precision(precision: str, device: torch.device, flags: frozenset[str] | None = None, *,
                      parameters: int = 0) -> str:  # fmt: skip
    """``precision`` for a torch model on ``device`` whose denoiser has ``parameters`` weights: "fp32" or
    "bf16" (``auto``: bf16 on a CPU with bf16 in hardware, for a denoiser of at least
    ``BF16_MIN_PARAMETERS``). On a GPU the model's own dtype governs (load it in fp16 there): only ``auto``
    and ``fp32`` are taken."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if device.type != "cpu":
        if precision == "bf16":
            raise ConfigError(f"precision bf16 is for the CPU; on {device.type} load the model in the dtype to "
                              "run (e.g. fp16)")  # fmt: skip
        return "fp32"
    if precision == "auto":
        return "bf16" if native_bf16(flags) and parameters >= BF16_MIN_PARAMETERS else "fp32"
    return precision


ENGINE_SET_PRECISIONS = ("auto", "fp32")  # what an engine set takes: it runs in the precision it was built in


def check_for_engine_set(precision: str) -> None:
    """An engine set runs in the precision it was built in: only ``auto`` and ``fp32`` are taken."""
    if precision not in ENGINE_SET_PRECISIONS:
        raise ConfigError(f"precision {precision!r} is for torch models; an engine set runs in the precision it "
                          "was built in")  # fmt: skip


def autocast(fn: Callable[..., torch.Tensor], dtype: torch.dtype = torch.bfloat16) -> Callable[..., torch.Tensor]:
    """``fn`` under ``torch.autocast`` on the CPU, its output back in fp32."""

    def call(*args: object) -> torch.Tensor:
        with torch.autocast("cpu", dtype=dtype):
            return fn(*args).float()

    return call
