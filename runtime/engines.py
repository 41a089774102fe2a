"""Engine sets: a self-sufficient folder of ONNX files / TensorRT plans, the text encoder(s), and
``manifest.json``; and how to load one.

The manifest says what was built from what (model, fused LoRAs, canvas, stream-batch shape, timesteps,
I/O of every network by name, tool versions, file hashes) and carries a cache key over all of it. The
text half (tokenizers and text encoders with the LoRAs fused, as safetensors) lives in ``text/``, so a
stream on an engine set never loads the source model. The runtime refuses an engine set that is
incomplete, corrupt, or built for another request, with the command that rebuilds it: the build tool
records that command (and which flag sets which request field) in the manifest; the runtime never
composes flags of its own.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import backends
from .errors import SemdrawError
from .families import get_family
from .prompts import PromptEncoder

MANIFEST = "manifest.json"
FORMAT_VERSION = 2  # 2: text encoders in the set, recorded rebuild command, source key
TEXT_FOLDER = "text"
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
    onnx_int8: str | None = None  # an int8 ONNX for onnxruntime on the CPU (build-engines --int8-*)
    validation: dict[str, Any] = field(default_factory=dict)  # measured errors vs torch per artifact
    sizes: dict[str, int] = field(default_factory=dict)  # file name -> bytes (the cheap check at load)
    rows: dict[str, int] | None = None  # the TensorRT plan's row range {"min", "opt", "max"} (None: fixed batch)

    @property
    def onnx_weights(self) -> int:
        """About how many weights its fp32 ONNX holds: the file's bytes, with its external data, over 4
        (0 where the manifest lists no sizes)."""
        return sum(b for name, b in self.sizes.items() if name == self.onnx or name.startswith(f"{self.onnx}.")) // 4


@dataclass(frozen=True)
class BuildRequest:
    """Everything an engine set is built from; its hash (with tool versions) is the cache key."""

    model: str
    loras: tuple[tuple[str, float], ...]
    height: int
    width: int
    layers: int
    timesteps: tuple[float, ...]
    cfg: str  # a guidance mode: "none" | "full" | "self" | "initialize" (semdraw.step.GUIDANCE_MODES)
    backend: str  # "onnx" | "tensorrt" | "all"
    precision: str  # "fp16" | "fp32" (TensorRT precision; the ONNX reference is always fp32)
    family: str = ""  # the family as asked for (--family); "" when the model's files decided it
    # weights_fingerprint() of the exported networks (LoRAs fused) and of the text encoder(s) the set is
    # paired with: a model retrained or re-downloaded under the same name is a different build.
    networks_weights: str = ""
    text_encoder_weights: str = ""
    max_rows: int = 0  # TensorRT denoiser: a row range 1..max_rows (0: the fixed stream batch)
    int8: tuple[str, ...] = ()  # the networks that also have an int8 ONNX (build-engines --int8-*)

    @property
    def batch(self) -> int:
        """Stream-batch rows: L layers x T steps, ordered step-major, plus the rows with a negative pass (full
        CFG: all of them; initialize: those of the first step)."""
        from .step import guidance_mode

        T = len(self.timesteps)
        negative_steps = guidance_mode(self.cfg).negative_steps
        return self.layers * (T + (T if negative_steps is None else min(negative_steps, T)))

    def key(self, tools: dict[str, str]) -> str:
        blob = json.dumps({"request": asdict(self), "tools": tools, "format": FORMAT_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _format_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(_format_value(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class RebuildCommand:
    """The command that built a set, as the build tool recorded it, and the flag of each request field."""

    argv: tuple[str, ...]
    flags: dict[str, str]  # request field (e.g. "layers") -> the flag that sets it (e.g. "--layers")

    def line(self, **changes: Any) -> str:
        """The recorded command with some request fields changed (e.g. ``line(layers=5)``), shell-quoted."""
        argv = list(self.argv)
        for name, value in changes.items():
            flag = self.flags.get(name)
            if flag is None:
                continue  # not settable from the command line: the recorded command is the best advice
            if flag in argv:
                argv[argv.index(flag) + 1] = _format_value(value)
            else:
                argv += [flag, _format_value(value)]
        return shlex.join(argv)


@dataclass(frozen=True)
class TextEntry:
    """The set's text half: tokenizers and text encoders (LoRAs fused) saved under ``text/<component>``."""

    components: dict[str, str]  # component name -> its transformers class
    sha256: dict[str, str]  # file (relative to the set) -> hash
    vocabulary: tuple[str, ...] | None = None  # a closed vocabulary (toy): outside words are warned about
    settings: dict[str, Any] = field(default_factory=dict)  # what encoding needs from the rest of the model
    sizes: dict[str, int] = field(default_factory=dict)  # file -> bytes (the cheap check at load)


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
    rebuild: RebuildCommand
    text: TextEntry
    bootstrap_steps: int  # the model's default (SamplingDefaults.bootstrap_steps)
    # a key over the request as given and the source files, known before any model is loaded ("" if none)
    source_key: str = ""
    sampler_params: dict[str, float] = field(default_factory=dict)  # the sampler's step arguments (TCD: eta)
    format: int = FORMAT_VERSION
    # every LoRA baked into the exported networks: the preset's own (toy, sd15: their LCM-LoRAs) and --lora's
    fused_loras: tuple[tuple[str, float], ...] = ()
    bootstrap_mix_steps: float = 1.0  # the model's default (SamplingDefaults.bootstrap_mix_steps); 1 before it was recorded

    def rebuild_line(self, folder: str | Path, **changes: Any) -> str:
        """The recorded build command for this set at ``folder`` (it may have moved), with ``changes``."""
        return self.rebuild.line(out=folder, **changes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @staticmethod
    def from_json(text: str) -> Manifest:
        raw = json.loads(text)
        req = raw["request"]
        request = BuildRequest(**{**req, "loras": tuple(tuple(x) for x in req["loras"]),
                                  "timesteps": tuple(req["timesteps"]), "int8": tuple(req.get("int8", ()))})  # fmt: skip

        def spec(d: dict) -> TensorSpec:
            return TensorSpec(d["name"], tuple(d["shape"]), d["dtype"])

        networks = {
            name: NetworkEntry(
                **{**n, "inputs": tuple(spec(i) for i in n["inputs"]), "output": spec(n["output"])}
            )
            for name, n in raw["networks"].items()
        }
        fused = tuple(tuple(x) for x in raw.get("fused_loras", ()))  # as the request's loras
        rebuild = RebuildCommand(tuple(raw["rebuild"]["argv"]), dict(raw["rebuild"]["flags"]))
        text = raw["text"]
        vocab = text.get("vocabulary")
        text = TextEntry(dict(text["components"]), dict(text["sha256"]), None if vocab is None else tuple(vocab),
                         dict(text.get("settings", {})), dict(text.get("sizes", {})))  # fmt: skip
        return Manifest(**{**raw, "request": request, "networks": networks, "fused_loras": fused,
                           "rebuild": rebuild, "text": text})  # fmt: skip


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
        raw = json.loads(file.read_text())
        if raw.get("format") != FORMAT_VERSION:
            raise EngineSetError(
                f"{folder} has manifest format {raw.get('format')}, this semdraw reads {FORMAT_VERSION}; rebuild "
                f"it with build-engines (its request was {raw.get('request')})"
            )
        return Manifest.from_json(file.read_text())
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise EngineSetError(
            f"{file} is unreadable ({err}); delete {folder} and rebuild it with build-engines"
        ) from err


def verify_files(folder: Path, manifest: Manifest, *, full: bool = True) -> None:
    """Every file the manifest names exists and is as built: by its recorded hash (``full``: the build's
    cache check), or by its recorded size where the manifest has sizes (each start of a stream: hashing an
    SD1.5 set's ~7 GB took ~10 s; a size catches truncation and a missing or replaced file)."""
    entries = [*manifest.networks.items(), ("text", manifest.text)]
    files = [(role, name, digest, entry.sizes.get(name)) for role, entry in entries for name, digest in entry.sha256.items()]
    for role, name, digest, size in files:
        p = folder / name
        if not p.exists():
            raise EngineSetError(f"{folder}: {role} file {name} is missing; rebuild with: "
                                 f"{manifest.rebuild_line(folder)}")  # fmt: skip
        damaged = p.stat().st_size != size if (size is not None and not full) else sha256_file(p) != digest
        if damaged:
            raise EngineSetError(f"{folder}: {role} file {name} is corrupt or truncated ({'size' if size is not None and not full else 'hash'} "
                                 f"mismatch); rebuild with: {manifest.rebuild_line(folder)}")  # fmt: skip


@dataclass
class EngineSet:
    """Loaded networks of an engine set, each a backend runner fed by the manifest's I/O names, and its
    prompt encoder (``None`` when loaded with ``text=False``, e.g. because the caller has the model)."""

    path: Path
    manifest: Manifest
    backend: str
    denoiser: backends.Denoiser
    encoder: backends.Encoder
    decoder: backends.Decoder
    prompts: PromptEncoder | None = None


def load_text_components(text_dir: Path, classes: dict[str, str]) -> dict[str, Any]:
    """Each saved text component (``text_dir/<name>``) loaded with its recorded transformers class."""
    import transformers

    components = {}
    for name, cls in classes.items():
        loader = getattr(transformers, cls, None)
        if loader is None:
            raise EngineSetError(f"text component {name} needs transformers.{cls}, which this transformers lacks")
        components[name] = loader.from_pretrained(str(text_dir / name))
    return components


def load_prompt_encoder(folder: str | Path, manifest: Manifest | None = None) -> PromptEncoder:
    """The set's tokenizers and text encoders (LoRAs fused at build time), on the CPU in float32."""
    folder = Path(folder)
    manifest = manifest or read_manifest(folder)
    try:
        components = load_text_components(folder / TEXT_FOLDER, manifest.text.components)
    except EngineSetError as err:
        raise EngineSetError(f"{folder}: {err}; rebuild with: {manifest.rebuild_line(folder)}") from err
    vocab = manifest.text.vocabulary
    return PromptEncoder(get_family(manifest.family), components, name=manifest.request.model,
                         vocabulary=None if vocab is None else frozenset(vocab), settings=manifest.text.settings)  # fmt: skip


@dataclass(frozen=True)
class EngineBackend:
    """How one backend runs an engine set: which files of a network entry it reads and how it opens them.
    A new backend is one more entry in :data:`ENGINE_BACKENDS`, not another branch."""

    name: str
    files: str  # what it reads, in words
    file_of: Callable[[NetworkEntry], str | None]  # the entry's file for this backend (None: not built)
    runner: Callable[..., Any]  # (path, input names, output name, device=, [cuda_graph=]) -> a runner
    default_device: str
    available: Callable[[], bool]  # this machine can run it
    build_backend: str  # build-engines --backend that produces its files
    rebuild_hint: str
    graphs: bool = False  # the runner takes cuda_graph=
    cpu_threads: bool = False  # the runner takes threads= and lanes= (its own CPU threads)
    int8_file_of: Callable[[NetworkEntry], str | None] = lambda n: None  # its int8 file on the CPU, where built

    def usable(self, manifest: Manifest) -> bool:
        return all(self.file_of(n) for n in manifest.networks.values())

    def open(self, folder: Path, net: NetworkEntry, device: torch.device, cuda_graph: bool,
             threads: int | None = None, lanes: int = 1, int8: bool = True) -> Any:  # fmt: skip
        names = [i.name for i in net.inputs]
        file = (self.int8_file_of(net) if int8 and device.type == "cpu" else None) or self.file_of(net)
        extra = {"cuda_graph": cuda_graph} if self.graphs else {}
        if self.cpu_threads:
            extra |= {"threads": threads, "lanes": lanes}
        return self.runner(folder / str(file), names, net.output.name, device=device, **extra)


# The networks whose work runs in lanes on a CPU (backends.OrtRunner): a denoiser call carries many rows of
# small convolutions, which one thread each computes faster than all threads together (semdraw-bench host
# --one-call, docs/benchmarks.md); a host's frames go to the decoder together, one lane per share of them
# (a single frame still runs on all threads).
LANE_ROLES = frozenset({"denoiser", "vae_decoder"})
# Lanes pay only where a row's convolutions are too small to keep several threads busy: the toy (1.8 M
# weights) gains in every call; an SD1.5-sized denoiser (860 M) gains 4 % at six rows and runs a single row
# 1.8x slower in one lane than on two threads (docs/engines.md), so by default it runs each call whole (and
# holds one session, not two).
LANES_MAX_WEIGHTS = 100_000_000


def default_lanes(net: NetworkEntry, threads: int) -> int:
    """How many lanes a network's work runs in by default: ``threads`` for a small network, else 1."""
    return threads if net.onnx_weights < LANES_MAX_WEIGHTS else 1


# In "auto" order: the first this set has files for and this machine can run.
ENGINE_BACKENDS = {b.name: b for b in (
    EngineBackend("tensorrt", "TensorRT plans", lambda n: n.tensorrt, lambda *a, **k: backends.TensorRTRunner(*a, **k),
                  "cuda", lambda: backends.tensorrt_available(), "all", "on a CUDA machine rebuild with", graphs=True),
    EngineBackend("onnxruntime", "ONNX files", lambda n: n.onnx, lambda *a, **k: backends.OrtRunner(*a, **k), "cpu",
                  lambda: importlib.util.find_spec("onnxruntime") is not None, "onnx", "rebuild with", cpu_threads=True,
                  int8_file_of=lambda n: n.onnx_int8),
)}  # fmt: skip


def load_engines(
    path: str | Path,
    backend: str = "auto",
    *,
    device: str | torch.device | None = None,
    expect: dict[str, Any] | None = None,
    verify: bool = True,
    text: bool = True,
    cuda_graph: bool = False,
    threads: int | None = None,
    lanes: int | None = None,
    int8: bool = True,
) -> EngineSet:
    """Load an engine set: ``backend`` "auto" (TensorRT when it and CUDA are here, else onnxruntime),
    "tensorrt" or "onnxruntime". ``expect`` (e.g. ``{"height": 64, "layers": 3}``) must match the
    build request, or the error names the command that rebuilds the set for it. ``text``: also load the
    set's prompt encoder (the source model is never needed). ``cuda_graph``: TensorRT runners capture
    their enqueue as a CUDA graph (GPU-only). ``threads``: the CPU threads of each network that runs on
    the CPU (default: torch's thread count); ``lanes``: how many parts of a denoiser call's rows, or of a
    host's frames to decode, run side by side, one thread each (default: ``threads`` for a network under
    LANES_MAX_WEIGHTS weights, else 1; 1: one call at a time on all the threads). ``int8``: on the CPU, onnxruntime runs a network's int8 file where
    the set has one (build-engines --int8-decoder / --int8-denoiser); False: the fp32 files."""
    folder = Path(path)
    manifest = read_manifest(folder)
    if expect:
        _check_expected(folder, manifest, expect)
    if verify:
        verify_files(folder, manifest, full=False)
    if backend != "auto" and backend not in ENGINE_BACKENDS:
        raise EngineSetError(f"unknown backend {backend!r}; choose auto, {', '.join(ENGINE_BACKENDS)}")
    if backend == "auto":  # the first that this set has files for and this machine can run (else the first it
        # has files for, whose runner says what is missing)
        usable = [b.name for b in ENGINE_BACKENDS.values() if b.usable(manifest)] or ["onnxruntime"]
        backend = next((n for n in usable if ENGINE_BACKENDS[n].available()), usable[0])
    chosen = ENGINE_BACKENDS[backend]
    if not chosen.usable(manifest):
        raise EngineSetError(f"{folder} has no {chosen.files}; {chosen.rebuild_hint}: "
                             f"{manifest.rebuild_line(folder, backend=chosen.build_backend)}")  # fmt: skip
    dev = torch.device(device) if device else torch.device(chosen.default_device)
    runners = {}
    for role in NETWORK_ROLES:
        net = manifest.networks.get(role)
        if net is None:
            raise EngineSetError(
                f"{folder} lacks the {role} network; rebuild with: {manifest.rebuild_line(folder)}"
            )
        role_lanes = (lanes or default_lanes(net, threads or torch.get_num_threads())) if role in LANE_ROLES else 1
        runners[role] = chosen.open(folder, net, dev, cuda_graph, threads, role_lanes, int8)
    prompts = load_prompt_encoder(folder, manifest) if text else None
    return EngineSet(folder, manifest, backend, runners["denoiser"], runners["vae_encoder"], runners["vae_decoder"],
                     prompts)  # fmt: skip


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
        detail = ", ".join(f"{k}: built {have!r}, requested {want!r}" for k, (have, want) in wrong.items())
        fixed = manifest.rebuild_line(folder, **{k: want for k, (_, want) in wrong.items()})
        raise EngineSetError(f"{folder} was built for another request ({detail}); rebuild with: {fixed}")
