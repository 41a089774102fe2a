"""Engine sets: a folder of ONNX files / TensorRT plans plus ``manifest.json``, and how to load one.

The manifest says what was built from what (model, fused LoRAs, canvas, stream-batch shape, timesteps,
I/O of every network, tool versions, file hashes) and carries a cache key over all of it. The runtime
refuses an engine set that is incomplete, corrupt, or built for another request, with the exact
``build-engines`` command that rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import backends
from .errors import SemdrawError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
NETWORK_ROLES = ("denoiser", "vae_encoder", "vae_decoder")


class EngineSetError(SemdrawError):
    """An engine set that is missing, incomplete, corrupt or built for another request."""


def weights_fingerprint(*modules: torch.nn.Module) -> str:
    """A short hash of the modules' weights, independent of the dtype they were loaded in.

    Values are hashed as float16 (an fp32 model and the same model loaded in fp16 agree), with their
    names and shapes, in name order.
    """
    h = hashlib.sha256()
    for i, module in enumerate(modules):
        for name, tensor in sorted(module.state_dict().items()):
            t = tensor.detach()
            h.update(f"{i}:{name}:{tuple(t.shape)}".encode())
            if t.is_floating_point():
                t = t.to("cpu", torch.float16)
            h.update(t.to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # "float32", "float16", "int64"


@dataclass(frozen=True)
class NetworkEntry:
    """One network of the set: its I/O and its files (ONNX always; a TensorRT plan where built)."""

    inputs: tuple[TensorSpec, ...]
    output: TensorSpec
    onnx: str  # fp32 ONNX file name (the CPU path and the reference)
    sha256: dict[str, str]  # file name -> hash, for every file of this network
    onnx_fp16: str | None = None
    tensorrt: str | None = None
    validation: dict[str, Any] = field(default_factory=dict)  # measured errors vs torch per artifact


@dataclass(frozen=True)
class BuildRequest:
    """Everything an engine set is built from; its hash (with tool versions) is the cache key."""

    model: str
    loras: tuple[tuple[str, float], ...]
    height: int
    width: int
    layers: int
    timesteps: tuple[float, ...]
    cfg: str  # "none" | "full"
    backend: str  # "onnx" | "tensorrt" | "all"
    precision: str  # "fp16" | "fp32" (TensorRT precision; the ONNX reference is always fp32)
    # weights_fingerprint() of the exported networks (LoRAs fused) and of the text encoder(s) the set is
    # paired with: a model retrained or re-downloaded under the same name is a different build.
    networks_weights: str = ""
    text_encoder_weights: str = ""

    @property
    def batch(self) -> int:
        """Stream-batch rows: L layers x T steps (x2 with full CFG), ordered step-major."""
        return self.layers * len(self.timesteps) * (2 if self.cfg == "full" else 1)

    def command(self, out: str | Path) -> str:
        """The build-engines command line that builds exactly this request."""
        args = ["build-engines", "--model", self.model]
        for src, scale in self.loras:
            args += ["--lora", f"{src}:{scale:g}"]
        args += ["--height", str(self.height), "--width", str(self.width), "--layers", str(self.layers),
                 "--timesteps", ",".join(f"{t:g}" for t in self.timesteps), "--cfg", self.cfg,
                 "--backend", self.backend, "--precision", self.precision, "--out", str(out)]  # fmt: skip
        return shlex.join(args)

    def key(self, tools: dict[str, str]) -> str:
        blob = json.dumps({"request": asdict(self), "tools": tools, "format": FORMAT_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Manifest:
    request: BuildRequest
    key: str
    family: str
    sampler: str
    scheduler_config: dict[str, Any]
    latent_channels: int
    latent_height: int
    latent_width: int
    vae_scaling_factor: float
    vae_shift_factor: float
    tools: dict[str, str]
    networks: dict[str, NetworkEntry]
    format: int = FORMAT_VERSION
    # every LoRA baked into the exported denoiser: the preset's own (toy, sd15: their LCM-LoRAs) and --lora's
    fused_loras: tuple[tuple[str, float], ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @staticmethod
    def from_json(text: str) -> Manifest:
        raw = json.loads(text)
        req = raw["request"]
        request = BuildRequest(**{**req, "loras": tuple(tuple(x) for x in req["loras"]),
                                  "timesteps": tuple(req["timesteps"])})  # fmt: skip

        def spec(d: dict) -> TensorSpec:
            return TensorSpec(d["name"], tuple(d["shape"]), d["dtype"])

        networks = {
            name: NetworkEntry(
                **{**n, "inputs": tuple(spec(i) for i in n["inputs"]), "output": spec(n["output"])}
            )
            for name, n in raw["networks"].items()
        }
        fused = tuple(tuple(x) for x in raw.get("fused_loras", ()))  # as the request's loras
        return Manifest(**{**raw, "request": request, "networks": networks, "fused_loras": fused})


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(path: str | Path) -> Manifest:
    folder = Path(path)
    file = folder / MANIFEST
    if not file.exists():
        raise EngineSetError(
            f"{folder} is not an engine set (no {MANIFEST}); build one with `build-engines --out {folder}`"
        )
    try:
        return Manifest.from_json(file.read_text())
    except (KeyError, TypeError, ValueError) as err:
        raise EngineSetError(
            f"{file} is unreadable ({err}); delete {folder} and rebuild it with build-engines"
        ) from err


def verify_files(folder: Path, manifest: Manifest) -> None:
    """Every file the manifest names exists and has its recorded hash (catches truncation/corruption)."""
    for role, net in manifest.networks.items():
        for name, digest in net.sha256.items():
            p = folder / name
            if not p.exists():
                raise EngineSetError(f"{folder}: {role} file {name} is missing; rebuild with: "
                                     f"{manifest.request.command(folder)}")  # fmt: skip
            if sha256_file(p) != digest:
                raise EngineSetError(f"{folder}: {role} file {name} is corrupt or truncated (hash mismatch); "
                                     f"rebuild with: {manifest.request.command(folder)}")  # fmt: skip


@dataclass
class EngineSet:
    """Loaded networks of an engine set, each a backend runner with the manifest's I/O order."""

    path: Path
    manifest: Manifest
    backend: str
    denoiser: backends.Denoiser
    encoder: backends.Encoder
    decoder: backends.Decoder


def load_engines(
    path: str | Path,
    backend: str = "auto",
    *,
    device: str | torch.device | None = None,
    expect: dict[str, Any] | None = None,
    verify: bool = True,
) -> EngineSet:
    """Load an engine set: ``backend`` "auto" (TensorRT when it and CUDA are here, else onnxruntime),
    "tensorrt" or "onnxruntime". ``expect`` (e.g. ``{"height": 64, "layers": 3}``) must match the
    build request, or the error names the command that rebuilds the set for it."""
    folder = Path(path)
    manifest = read_manifest(folder)
    if manifest.format != FORMAT_VERSION:
        raise EngineSetError(f"{folder} has manifest format {manifest.format}, this semdraw reads {FORMAT_VERSION}; "
                             f"rebuild with: {manifest.request.command(folder)}")  # fmt: skip
    if expect:
        _check_expected(folder, manifest, expect)
    if verify:
        verify_files(folder, manifest)
    if backend not in ("auto", "tensorrt", "onnxruntime"):
        raise EngineSetError(f"unknown backend {backend!r}; choose auto, tensorrt or onnxruntime")
    has_plans = all(n.tensorrt for n in manifest.networks.values())
    if backend == "auto":
        backend = "tensorrt" if has_plans and backends.tensorrt_available() else "onnxruntime"
    if backend == "tensorrt" and not has_plans:
        raise EngineSetError(f"{folder} has no TensorRT plans; on a CUDA machine rebuild with: "
                             f"{manifest.request.command(folder).replace('--backend onnx', '--backend all')}")  # fmt: skip
    dev = torch.device(device) if device else torch.device("cuda" if backend == "tensorrt" else "cpu")
    runners = {}
    for role in NETWORK_ROLES:
        net = manifest.networks.get(role)
        if net is None:
            raise EngineSetError(
                f"{folder} lacks the {role} network; rebuild with: {manifest.request.command(folder)}"
            )
        names = [i.name for i in net.inputs]
        if backend == "tensorrt":
            runners[role] = backends.TensorRTRunner(folder / net.tensorrt, names, net.output.name, device=dev)
        else:
            runners[role] = backends.OrtRunner(folder / net.onnx, names, net.output.name, device=dev)
    return EngineSet(
        folder, manifest, backend, runners["denoiser"], runners["vae_encoder"], runners["vae_decoder"]
    )


def _check_expected(folder: Path, manifest: Manifest, expect: dict[str, Any]) -> None:
    req = manifest.request
    wrong = {}
    for k, v in expect.items():
        have = getattr(req, k)
        if k == "timesteps":
            v = tuple(float(t) for t in v)
            have = tuple(float(t) for t in have)
        if have != v:
            wrong[k] = (have, v)
    if wrong:
        from dataclasses import replace

        fixed = replace(req, **{k: (tuple(v) if k == "timesteps" else v) for k, (_, v) in wrong.items()})
        detail = ", ".join(f"{k}: built {have!r}, requested {want!r}" for k, (have, want) in wrong.items())
        raise EngineSetError(
            f"{folder} was built for another request ({detail}); rebuild with: {fixed.command(folder)}"
        )
