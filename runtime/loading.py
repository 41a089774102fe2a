"""`load_model`: presets, hub ids, local diffusers folders and single-file checkpoints, with fused LoRAs."""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from .errors import LoraError, ModelNotFoundError
from .families import FAMILIES, FamilySpec, Preset, get_family
from .model import Model, family_latent_size, native_side
from .quiet import quiet_loading

log = logging.getLogger(__name__)


# Every family's presets, by name (a preset's family is the module that declares it).
PRESET_FAMILIES: dict[str, FamilySpec] = {name: fam for fam in FAMILIES.values() for name in fam.presets}
PRESETS: dict[str, Preset] = {name: fam.presets[name] for name, fam in PRESET_FAMILIES.items()}
DEFAULT_MODEL = "toy"
MODEL_HELP = (f"a preset ({', '.join(PRESETS)}; default {DEFAULT_MODEL}), a hub id, a diffusers folder, or a "
              "single .safetensors checkpoint")  # fmt: skip

LoraSpec = str | tuple[str, float]


def find_preset(name_or_path: str) -> tuple[Preset, FamilySpec] | None:
    """The preset a name stands for: a named one, or a model folder of a family's own layout (a folder
    ``semdraw-train-toy`` wrote); None for everything else (hub ids, diffusers folders, checkpoints)."""
    key = str(name_or_path).lower()
    if key in PRESETS:
        return PRESETS[key], PRESET_FAMILIES[key]
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        for fam in FAMILIES.values():
            preset = fam.folder_preset(path) if fam.folder_preset else None
            if preset is not None:
                return preset, fam
    return None


def cpu_backend(name_or_path: str) -> str:
    """The backend that streams a model fastest on a CPU, as measured: its preset's (torch where it has none)."""
    found = find_preset(name_or_path)
    return found[0].cpu_backend if found else "torch"


def parse_lora(spec: LoraSpec) -> tuple[str, float]:
    """'ID_OR_PATH[:SCALE]' or (id, scale) → (id, scale); scale defaults to 1."""
    if isinstance(spec, tuple):
        source, scale = spec
        return str(source), float(scale)
    source, _, scale = str(spec).rpartition(":")
    if source:
        try:
            return source, float(scale)
        except ValueError:
            pass
    return str(spec), 1.0


def _default_device(device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _fetch_hint(source: str) -> str:
    repo, _ = hub_file(source)
    return (f"Without network access only local diffusers folders, local .safetensors files and models already in "
            f"the Hugging Face cache load: fetch it once on a connected machine with `hf download "
            f"{repo}` (then HF_HUB_OFFLINE=1 uses the cache), or pass a local path")  # fmt: skip


def _not_found(source: str, err: Exception) -> ModelNotFoundError:
    """One line: what could not be loaded, why, and how to get it."""
    return ModelNotFoundError(f"could not load {source!r} ({_first_line(err)}). {_fetch_hint(source)}; "
                              f"presets: {sorted(PRESETS)}")  # fmt: skip


def hub_file(source: str) -> tuple[str, str | None]:
    """(repo or path, weight file) of a LoRA source: ``org/name/file.safetensors`` names one file of a hub
    repo (e.g. ``ByteDance/SDXL-Lightning/sdxl_lightning_4step_lora.safetensors``); anything else is
    passed as it is (a local file or folder, or a hub repo with one LoRA file)."""
    parts = source.split("/")
    if len(parts) > 2 and source.endswith(".safetensors") and not Path(source).expanduser().exists():
        return "/".join(parts[:2]), "/".join(parts[2:])
    return source, None


def _dtype_kwarg() -> str:
    """from_pretrained's dtype argument: newer diffusers call it ``dtype`` and warn on ``torch_dtype``,
    older ones (>= 0.32, our floor) know only ``torch_dtype``."""
    import diffusers.utils

    return "dtype" if hasattr(diffusers.utils, "_resolve_dtype") else "torch_dtype"


def check_source(name_or_path: str) -> None:
    """Refuse, in one line (:class:`ModelNotFoundError`), what can be told about a model without loading
    it or asking the network: a preset whose shipped weights are missing, a folder that is not a diffusers
    model, a pickled checkpoint, a missing file, or a name that is neither a preset, a folder, a
    .safetensors file nor a hub id. A hub id passes: only its load can tell."""
    found = find_preset(name_or_path)
    if found:
        source = found[0].source
        if Path(source).is_absolute() and not Path(source).is_dir():  # shipped weights (toy)
            raise ModelNotFoundError(
                f"the {str(name_or_path).lower()} model's weights are missing from {source}; reinstall semdraw "
                "(for toy, or regenerate them with `semdraw-train-toy`)"
            )
        return
    source = str(name_or_path)
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").exists():
            raise ModelNotFoundError(f"{source!r} is a folder but not a diffusers model (no model_index.json)")
    elif path.suffix in (".ckpt", ".pt", ".pth", ".bin"):
        raise ModelNotFoundError(
            f"{source!r}: pickled checkpoints are refused (they can run code); convert it to .safetensors"
        )
    elif path.suffix == ".safetensors":
        if not path.exists():
            raise ModelNotFoundError(f"no such file: {source!r}")
    elif path.exists() or source.count("/") != 1:
        raise ModelNotFoundError(
            f"{source!r} is not a preset ({sorted(PRESETS)}), a diffusers folder, a .safetensors file or "
            "a hub id of the form 'org/name'"
        )


def _load_pipeline(source: str, dtype: torch.dtype, family: FamilySpec, extra_text_encoders: bool):
    """The diffusers pipeline of a source ``check_source`` let through: a folder, a file or a hub id."""
    import diffusers

    pipeline = getattr(diffusers, family.pipeline_class)
    kwargs = {_dtype_kwarg(): dtype, **family.load_kwargs}
    if not extra_text_encoders:  # e.g. SD3 without T5: never loaded, zeros where its tokens go
        kwargs.update({c: None for c in family.optional_components})
    path = Path(source).expanduser()
    try:
        if path.is_dir():
            return pipeline.from_pretrained(str(path), **kwargs)
        if path.suffix == ".safetensors":
            return pipeline.from_single_file(str(path), **kwargs)
        return pipeline.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:  # hub errors subclass these
        raise _not_found(source, err) from err


def check_canvas(name_or_path: str, height: int | None, width: int | None, *, family: str | None = None) -> None:
    """A canvas-size error before any weights load (for the commands): what the family and, for local
    models, the denoiser's config file say. ``None`` sides are the model's native size (always valid)."""
    if height is None and width is None:
        return
    found = find_preset(name_or_path)
    source = found[0].source if found else str(name_or_path)
    fam = get_family(family or (found[1].name if found else _family_of(source)))
    config_file = Path(source).expanduser() / fam.denoiser / "config.json"
    config, native = None, height if height is not None else width
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
            fam.min_latent_side(config)  # a config it cannot read is the load's to explain, not ours
            native = native_side(config, fam.latent_factor) if "sample_size" in config else native
        except (OSError, ValueError, KeyError, TypeError):
            config = None
    family_latent_size(fam, config, fam.latent_factor, native if height is None else height,
                       native if width is None else width)


def _family_of(source: str) -> str:
    """The family of a diffusers folder, from its pipeline class (model_index.json); SD1.5 otherwise."""
    index = Path(source).expanduser() / "model_index.json"
    if index.is_file():
        try:
            cls = json.loads(index.read_text()).get("_class_name")
        except (OSError, ValueError):
            cls = None
        for fam in FAMILIES.values():
            if fam.pipeline_class == cls:
                return fam.name
    return "sd15"


def _weights_fingerprint(*modules: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().float().norm() for m in modules for p in m.parameters()]


@contextlib.contextmanager
def _dropping_log_records(logger_name: str, prefix: str) -> Iterator[None]:
    """Drop one library logger's records that start with ``prefix`` for the duration."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(prefix)

    logger = logging.getLogger(logger_name)
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def fuse_loras(pipe, loras: Sequence[LoraSpec], family: FamilySpec) -> list[tuple[str, float]]:
    """Load, fuse and unload each LoRA in turn; raise if one changed no weight."""
    fused = []
    modules = [getattr(pipe, c) for c in (family.denoiser, *family.text_components)]
    modules = [m for m in modules if isinstance(m, torch.nn.Module)]
    for i, spec in enumerate(loras):
        source, scale = parse_lora(spec)
        before = _weights_fingerprint(*modules)
        name = f"semdraw_lora_{i}"
        peft_dir = _peft_adapter_dir(source)
        if peft_dir is not None:  # a PEFT adapter of the denoiser (e.g. jasperai/flash-sd3)
            setattr(pipe, family.denoiser, _merge_peft_adapter(getattr(pipe, family.denoiser), peft_dir, scale))
            modules[0] = getattr(pipe, family.denoiser)
            _check_changed(source, scale, before, _weights_fingerprint(*modules))
            fused.append((source, scale))
            continue
        try:
            with warnings.catch_warnings(record=True) as caught, _dropping_log_records(
                "diffusers.loaders.lora_base", "No LoRA keys associated to"  # UNet-only LoRAs: checked below
            ):
                warnings.simplefilter("always")
                repo, weight_name = hub_file(source)
                extra = {"weight_name": weight_name} if weight_name else {}
                pipe.load_lora_weights(repo, adapter_name=name, **extra)
            incomplete = [w for w in caught if "additional target modules" in str(w.message)]
            if incomplete:  # PEFT only warns; a LoRA missing some of its own modules is broken
                raise LoraError(f"LoRA {source!r} is incomplete: its config targets modules that have no weights "
                                "in the file (mixed key formats?); re-save it with consistent PEFT keys")  # fmt: skip
            for w in caught:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            pipe.fuse_lora(lora_scale=scale, adapter_names=[name])
            pipe.unload_lora_weights()
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            if isinstance(err, LoraError):
                raise
            if isinstance(err, OSError) and not Path(source).expanduser().exists():  # not here, not downloadable
                raise LoraError(f"could not load LoRA {source!r} ({_first_line(err)}). {_fetch_hint(source)}") from err
            raise LoraError(f"could not load or fuse LoRA {source!r}: {_first_line(err)}") from err
        _check_changed(source, scale, before, _weights_fingerprint(*modules))
        fused.append((source, scale))
    return fused


def _check_changed(source: str, scale: float, before: list[torch.Tensor], after: list[torch.Tensor]) -> None:
    if scale != 0 and all(torch.equal(a, b) for a, b in zip(before, after, strict=True)):
        raise LoraError(f"LoRA {source!r} changed no weight: its keys do not match this model")
    log.info("fused LoRA %s at scale %g", source, scale)


def _peft_adapter_dir(source: str) -> Path | None:
    """The folder of a PEFT adapter (``adapter_config.json`` beside its weights), local or a hub repo in the
    local cache or downloadable; None for diffusers-format LoRAs."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path if (path / "adapter_config.json").is_file() else None
    if path.exists() or source.count("/") != 1:
        return None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(source, "adapter_config.json")).parent
    except Exception:  # no such file (a diffusers LoRA), or offline: the diffusers path says what is missing
        return None


def _merge_peft_adapter(denoiser: torch.nn.Module, folder: Path, scale: float) -> torch.nn.Module:
    """The denoiser with a PEFT LoRA adapter merged into its weights at ``scale``."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    try:
        wrapped = PeftModel.from_pretrained(denoiser, str(folder))
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise LoraError(f"could not load the PEFT adapter {str(folder)!r}: {_first_line(err)}") from err
    for module in wrapped.modules():
        if isinstance(module, LoraLayer):
            for adapter in module.scaling:
                module.scaling[adapter] *= scale
    return wrapped.merge_and_unload()


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    loras: Sequence[LoraSpec] = (),
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    family: str | None = None,
    sampler: str | None = None,
    sampler_params: dict[str, float] | None = None,
    extra_text_encoders: bool = False,
) -> Model:
    """Load a model for generation.

    ``name_or_path``: a preset (``"toy"``, the default: the embedded model, offline; ``"sd15"``: SD1.5 +
    LCM-LoRA fused + TAESD), a hub id ("org/name"), a
    local diffusers folder, or a single-file ``.safetensors`` checkpoint. ``loras``: "ID_OR_PATH[:SCALE]"
    strings or (id, scale) pairs, fused into the weights (the load checks that each changed them).
    ``device`` defaults to CUDA when available; ``dtype`` to float16 on CUDA and float32 on CPU.
    ``extra_text_encoders``: also load the family's optional text encoders (SD3's T5: off by default, as the
    paper runs SD3; without it its tokens are zeros, as ``StableDiffusion3Pipeline`` does).
    """
    check_source(name_or_path)
    dev = _default_device(device)
    dt = dtype or (torch.float16 if dev.type == "cuda" else torch.float32)
    found = find_preset(name_or_path)
    preset = found[0] if found else None
    source = preset.source if preset else str(name_or_path)
    fam = get_family(family or (found[1].name if found else _family_of(source)))
    with quiet_loading():  # the libraries' notices and load bars, unless SEMDRAW_VERBOSE=1
        with (  # diffusers' noise about our own by-design choices: an AutoencoderTiny in an SD pipeline, and the
              # block_out_channels that diffusers itself writes into AutoencoderTiny configs and then ignores
            _dropping_log_records("diffusers.pipelines.pipeline_utils", "Expected types for vae"),
            _dropping_log_records("diffusers.configuration_utils", "The config attributes {'block_out_channels'"),
        ):
            pipe = preset.build(dt) if preset and preset.build else _load_pipeline(source, dt, fam, extra_text_encoders)
        if preset and preset.scheduler_overrides:  # e.g. Lightning / Hyper-SD: trailing timestep spacing
            pipe.scheduler = type(pipe.scheduler).from_config({**pipe.scheduler.config, **preset.scheduler_overrides})
        all_loras = list(preset.loras if preset else ()) + list(loras)
        fused = fuse_loras(pipe, all_loras, fam)
        if preset and preset.tiny_vae:
            import diffusers

            try:
                pipe.vae = diffusers.AutoencoderTiny.from_pretrained(preset.tiny_vae, **{_dtype_kwarg(): dt})
            except (OSError, ValueError) as err:
                raise _not_found(preset.tiny_vae, err) from err
    model = Model.from_pipeline(pipe, fam, sampler=sampler or (preset.sampler if preset else None),
                                name=str(name_or_path))  # fmt: skip
    model.loras = fused
    model.sampler_params = dict(sampler_params if sampler_params is not None else
                                (preset.sampler_params if preset else {}))  # fmt: skip
    if preset:
        model.defaults = preset.sampling_defaults()
    model.schedule()  # a bad sampler choice or parameter fails here, not at the first image
    if preset and preset.closed_vocabulary:
        model.vocabulary = preset.closed_vocabulary()
    return model.to(dev, dt)


# Files up to this size are fingerprinted by content; larger ones (multi-GB checkpoints) by size and
# modification time, so deciding a cache hit never reads gigabytes.
CONTENT_HASH_LIMIT = 64 << 20


def _path_fingerprint(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        stat = f.stat()
        h.update(f"{f.relative_to(path) if path.is_dir() else f.name}:{stat.st_size}".encode())
        if stat.st_size <= CONTENT_HASH_LIMIT:
            h.update(f.read_bytes())
        else:
            h.update(str(stat.st_mtime_ns).encode())
    return h.hexdigest()[:16]


def _hub_revision(repo_id: str) -> str | None:
    """The cached snapshot's commit of a hub repo, or None when it is not in the local cache."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True)).name
    except Exception:  # not cached, or huggingface_hub's own offline errors
        return None


def source_fingerprint(name_or_path: str, loras: Sequence[LoraSpec] = ()) -> str | None:
    """A fingerprint of everything a model would be loaded from, computed without loading it.

    Presets built in memory: their builder; local folders/files: their files; hub ids: the cached
    snapshot's commit. None when some source is a hub id not in the local cache (it must be loaded,
    i.e. downloaded, to know what it is).
    """
    import semdraw

    found = find_preset(name_or_path)
    preset = found[0] if found else None
    parts: list[str] = [f"semdraw {semdraw.__version__}"]
    if preset and preset.build:
        parts.append(f"built:{preset.build.__module__}.{preset.build.__qualname__}")
    sources = [] if preset and preset.build else [preset.source if preset else str(name_or_path)]
    if preset:
        sources += [src for src, _ in preset.loras] + ([preset.tiny_vae] if preset.tiny_vae else [])
        parts.append(repr((preset.loras, preset.tiny_vae, preset.sampler, preset.sampling_defaults(),
                           dict(preset.scheduler_overrides))))
    sources += [parse_lora(spec)[0] for spec in loras]
    for src in sources:
        path = Path(src).expanduser()
        if path.exists():
            parts.append(f"{src}={_path_fingerprint(path)}")
            continue
        repo = hub_file(src)[0]
        revision = _hub_revision(repo) if repo.count("/") == 1 else None
        if revision is None:
            return None
        parts.append(f"{src}@{revision}")
    return "\n".join(parts)
