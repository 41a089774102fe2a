"""Backends: run a network on device tensors. They know nothing of streams, brushes or samplers.

One contract per role, each a single ``__call__`` on device tensors (names as in the engine manifest):

* ``Denoiser(sample=[B,C,h,w], timestep=[B], **conditioning) -> [B,C,h,w]``: the conditioning's names are
  the family's (``encoder_hidden_states`` for SD1.5; SDXL adds ``text_embeds``, ``time_ids``)
* ``Encoder(image [B,3,H,W] in [-1, 1]) -> raw latents [B,C,h,w]``  (unscaled, as the VAE encoder emits)
* ``Decoder(raw latents) -> image [B,3,H,W] in about [-1, 1]``

Three interchangeable implementations: a torch module (:class:`TorchRunner`), an onnxruntime session
(:class:`OrtRunner`, CPU or CUDA provider) and a TensorRT engine (:class:`TensorRTRunner`, imported
lazily: without TensorRT everything else works). Each runner is generic over the network: the I/O names
come from the engine manifest, never from code that knows what a UNet is. Inputs are given by name
(``runner(sample=x, timestep=t, ...)``) or positionally in the manifest's order.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .errors import SemdrawError

log = logging.getLogger(__name__)


class BackendError(SemdrawError):
    """A backend that cannot run here (missing package, no CUDA, unreadable engine file)."""


class Denoiser(Protocol):
    def __call__(self, *inputs: torch.Tensor, **named: torch.Tensor) -> torch.Tensor: ...


class Encoder(Protocol):
    def __call__(self, image: torch.Tensor) -> torch.Tensor: ...


class Decoder(Protocol):
    def __call__(self, latent: torch.Tensor) -> torch.Tensor: ...


def ordered_inputs(names: Sequence[str], inputs: Sequence[torch.Tensor],
                   named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # fmt: skip
    """{name: tensor} from positional inputs (in ``names`` order) or named ones; a clear error otherwise."""
    if inputs and named:
        raise BackendError("pass a network's inputs positionally or by name, not both")
    if inputs:
        if len(inputs) != len(names):
            raise BackendError(f"the network takes {len(names)} inputs {list(names)}, got {len(inputs)}")
        return dict(zip(names, inputs, strict=True))
    if set(named) != set(names):
        raise BackendError(f"the network takes the inputs {list(names)}, got {sorted(named)}")
    return {n: named[n] for n in names}


class TorchRunner:
    """Runs a torch module whose forward takes the inputs positionally (in ``input_names`` order)."""

    any_batch = True  # a torch module takes any number of rows

    def __init__(self, module: torch.nn.Module, input_names: Sequence[str] | None = None) -> None:
        self.module = module.eval()
        self.input_names = list(input_names) if input_names is not None else None

    @torch.no_grad()
    def __call__(self, *inputs: torch.Tensor, **named: torch.Tensor) -> torch.Tensor:
        if named:
            if self.input_names is None:
                raise BackendError("this TorchRunner was built without input names: pass its inputs positionally")
            inputs = tuple(ordered_inputs(self.input_names, (), named).values())
        return self.module(*inputs)


_ORT_TO_TORCH = {
    "tensor(float)": torch.float32,
    "tensor(float16)": torch.float16,
    "tensor(int64)": torch.int64,
    "tensor(int32)": torch.int32,
}


def ort_providers(device: torch.device) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise BackendError(
                "onnxruntime has no CUDA provider here: install onnxruntime-gpu, or run on the CPU"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OrtRunner:
    """Runs an ONNX file with onnxruntime; inputs in the manifest's order.

    On CUDA the inputs and outputs are bound to device memory (I/O binding, zero copy); on the CPU torch
    tensors are shared with numpy without copies. ``lanes`` > 1 (CPU; by default small networks only,
    ``engines.default_lanes``): a second session computes on one thread, and a call's rows (a file with a
    row axis) are split into up to ``lanes`` parts run side by side on it, one thread each, as are the
    calls of :meth:`run_each` (a fixed-batch file: a decoder's frames): many small rows or frames run
    faster so than one after another on all threads (a painting host of the toy 1.15-1.22x, ``semdraw-bench
    host --one-call``, docs/benchmarks.md), since each thread keeps its own part's data and none waits for
    the others between operations. A call that cannot be split runs on all the threads.
    """

    def __init__(self, path: str | Path, input_names: Sequence[str], output_name: str, *,
                 device: torch.device | str = "cpu", threads: int | None = None, lanes: int = 1) -> None:  # fmt: skip
        try:
            import onnxruntime  # noqa: F401
        except ImportError as err:
            raise BackendError("onnxruntime is not installed: pip install 'semdraw[onnx]'") from err
        self.device = torch.device(device)
        self.path = Path(path)
        # One knob for the CPU threads every network uses: torch's (a served replica sets it to the CPUs it
        # reserves; onnxruntime's own default would take every core of the machine).
        threads = threads or torch.get_num_threads()
        self.lanes = max(1, lanes) if self.device.type == "cpu" else 1
        self.session = self._session(threads)  # whole calls, on all the threads
        # lanes share this one (onnxruntime runs a session from several threads at once; weights shared)
        self._lane_session = self._session(1) if self.lanes > 1 else None
        self.input_names = list(input_names)
        self.output_name = output_name
        # A file exported with a symbolic first axis on every input takes any number of rows.
        self.any_batch = all(isinstance(i.shape[0], str) for i in self.session.get_inputs())
        self._lane_pool = ThreadPoolExecutor(self.lanes - 1, thread_name_prefix="semdraw-lane") if self.lanes > 1 else None
        self._in_dtypes = {
            i.name: _ORT_TO_TORCH.get(i.type, torch.float32) for i in self.session.get_inputs()
        }

    @property
    def own_cpu_threads(self) -> bool:
        """It computes on CPU threads of its own (not torch's)."""
        return self.device.type == "cpu"

    def _session(self, threads: int):  # noqa: ANN202 - onnxruntime's InferenceSession
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        # Idle pool threads would spin after each run and starve the torch work between network calls.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # No CPU arena: it keeps (and grows by doubling) a pool of the largest activations on top of the
        # weights; without it an SD1.5-sized stream at 256² peaks at 5.6 GB instead of 7.1 GB, at the same
        # frame rate (semdraw-bench stream, docs/benchmarks.md).
        opts.enable_cpu_mem_arena = False
        try:
            session = ort.InferenceSession(str(self.path), sess_options=opts, providers=ort_providers(self.device))
        except Exception as err:  # onnxruntime raises its own exception types for corrupt files
            raise BackendError(f"onnxruntime cannot load {self.path}: {str(err).splitlines()[0]}") from err
        if self.device.type == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
            # onnxruntime falls back to the CPU silently when its CUDA provider fails to load
            raise BackendError("onnxruntime's CUDA provider did not load (it would run on the CPU): install "
                               "onnxruntime-gpu built for this CUDA, or use --backend torch")  # fmt: skip
        return session

    def _feeds(self, inputs: Sequence[torch.Tensor], named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: t.to(self._in_dtypes[n]).contiguous() for n, t in ordered_inputs(self.input_names, inputs, named).items()}

    def __call__(self, *inputs: torch.Tensor, **named: torch.Tensor) -> torch.Tensor:
        feeds = self._feeds(inputs, named)
        if self.device.type == "cuda":
            return self._run_bound(feeds)
        arrays = {n: t.detach().cpu().numpy() for n, t in feeds.items()}
        rows = next(iter(arrays.values())).shape[0]
        parts = min(self.lanes, rows) if self.any_batch else 1
        if parts <= 1:
            return torch.from_numpy(self.session.run([self.output_name], arrays)[0])
        bounds = [rows * i // parts for i in range(parts + 1)]
        shares = [[{n: a[lo:hi] for n, a in arrays.items()}] for lo, hi in itertools.pairwise(bounds)]
        return torch.from_numpy(np.ascontiguousarray(np.concatenate([out for share in self._in_lanes(shares)
                                                                     for out in share])))  # fmt: skip

    def run_each(self, calls: Sequence[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
        """The outputs of several calls (each its inputs in the manifest's order); on the CPU with lanes, the
        calls are shared out evenly among the lanes, one thread each, and those left over (fewer than the
        lanes) run one after another on all the threads: one lane holding an extra call would leave the
        others idle meanwhile."""
        if self.lanes <= 1 or len(calls) <= 1 or self.device.type == "cuda":
            return [self(*c) for c in calls]
        parts = min(self.lanes, len(calls))
        shared = len(calls) - len(calls) % parts
        feeds = [{n: t.detach().cpu().numpy() for n, t in self._feeds(c, {}).items()} for c in calls[:shared]]
        per_lane = shared // parts
        shares = [feeds[i * per_lane : (i + 1) * per_lane] for i in range(parts)]
        in_lanes = [torch.from_numpy(out) for share in self._in_lanes(shares) for out in share]
        return in_lanes + [self(*c) for c in calls[shared:]]

    def _in_lanes(self, shares: list[list[dict[str, np.ndarray]]]) -> list[list[np.ndarray]]:
        """Each share's runs in turn on the one-thread session, the shares side by side (this thread runs
        the first; onnxruntime lets go of Python's lock while it computes)."""

        def run(share: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
            return [self._lane_session.run([self.output_name], feed)[0] for feed in share]

        others = [self._lane_pool.submit(run, share) for share in shares[1:]]
        return [run(shares[0])] + [f.result() for f in others]

    def _run_bound(self, feeds: dict[str, torch.Tensor]) -> torch.Tensor:
        binding = self.session.io_binding()
        np_types = {
            torch.float32: np.float32,
            torch.float16: np.float16,
            torch.int64: np.int64,
            torch.int32: np.int32,
        }
        for name, t in feeds.items():
            binding.bind_input(
                name, "cuda", t.device.index or 0, np_types[t.dtype], list(t.shape), t.data_ptr()
            )
        binding.bind_output(self.output_name, "cuda", self.device.index or 0)
        # onnxruntime runs on its own CUDA stream: the inputs torch wrote on its stream must be complete first
        torch.cuda.current_stream(self.device).synchronize()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        out = binding.get_outputs()[0]
        if hasattr(out, "__dlpack__"):  # zero copy (OrtValue has __dlpack__; older releases to_dlpack)
            return torch.from_dlpack(out)
        if hasattr(out, "to_dlpack"):
            return torch.from_dlpack(out.to_dlpack())
        return torch.from_numpy(out.numpy()).to(self.device)  # a copy through the host


class TensorRTRunner:
    """Runs a serialized TensorRT 10/11 plan with preallocated torch buffers (tensor-address API).

    Addresses are set once; each call copies the inputs into the bound buffers and enqueues
    ``execute_async_v3`` on a non-default torch CUDA stream. With ``cuda_graph=True`` the first call
    captures the enqueue into a CUDA graph and later calls replay it.

    Not run in this project's CI (no GPU there); see docs/testing.md, "GPU status".

    A plan built for the stream batch alone has one fixed shape, so a stream on it runs every row
    (``any_batch`` False). A plan built with a row range (``build-engines --max-rows N``: an optimisation
    profile over axis 0, min 1 to max N) takes any row count up to N (``any_batch`` True, ``max_rows`` N):
    buffers are allocated at N rows and each call sets the input shapes; with ``cuda_graph=True`` each row
    count is captured once and replayed.
    """

    any_batch = False
    max_rows: int | None = None

    def __init__(self, path: str | Path, input_names: Sequence[str], output_name: str, *,
                 device: torch.device | str = "cuda", cuda_graph: bool = False) -> None:  # fmt: skip
        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise BackendError("TensorRT needs a CUDA device and none is available")
        self.device = torch.device(device)
        runtime = trt.Runtime(tensorrt_logger())
        self.engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise BackendError(f"TensorRT could not deserialize {path}: rebuild it for this TensorRT and GPU")
        self.context = self.engine.create_execution_context()
        self.input_names, self.output_name = list(input_names), output_name
        check_io(Path(path).name, [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)],
                 [*self.input_names, output_name])  # fmt: skip
        self.stream = torch.cuda.Stream(device=self.device)
        shapes = {n: tuple(self.engine.get_tensor_shape(n)) for n in [*self.input_names, output_name]}
        if any(-1 in shapes[n] for n in self.input_names):  # a row range: sized at the profile's max
            self.max_rows = int(self.engine.get_tensor_profile_shape(self.input_names[0], 0)[2][0])
            self.any_batch = True
            shapes = {n: (self.max_rows, *s[1:]) if s and s[0] == -1 else s for n, s in shapes.items()}
        self.buffers: dict[str, torch.Tensor] = {}
        for name, shape in shapes.items():
            dtype = _trt_to_torch(trt, self.engine.get_tensor_dtype(name))
            self.buffers[name] = torch.empty(shape, dtype=dtype, device=self.device)
            self.context.set_tensor_address(name, self.buffers[name].data_ptr())  # rows are a prefix: same address
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}  # per row count
        self._use_graph = cuda_graph

    def __call__(self, *inputs: torch.Tensor, **named: torch.Tensor) -> torch.Tensor:
        ordered = ordered_inputs(self.input_names, inputs, named)
        rows = int(next(iter(ordered.values())).shape[0])
        if self.max_rows is not None and rows > self.max_rows:
            raise BackendError(f"{rows} rows exceed this plan's row range (at most {self.max_rows}): rebuild it with "
                               f"a larger --max-rows")  # fmt: skip
        for name, t in ordered.items():
            if self.max_rows is not None:
                self.context.set_input_shape(name, tuple(t.shape))
            self.buffers[name][: t.shape[0]].copy_(t, non_blocking=True)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            if self._use_graph and rows not in self._graphs:
                self._graphs[rows] = self._capture(rows)
            elif rows in self._graphs:
                self._graphs[rows].replay()
            elif not self.context.execute_async_v3(self.stream.cuda_stream):
                raise BackendError("TensorRT execution failed")
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return self.buffers[self.output_name][:rows].clone()

    def _capture(self, rows: int) -> torch.cuda.CUDAGraph:
        """Capture the enqueue into a CUDA graph, checked: the warm-up and the captured enqueue must both be
        accepted (a refused capture would replay an empty graph and return stale outputs), and the first
        replay must give the eager run's output (the inputs are the same)."""
        if not self.context.execute_async_v3(self.stream.cuda_stream):  # warm-up: lazy setup is not captured
            raise BackendError("TensorRT execution failed (the run before CUDA-graph capture)")
        eager = self.buffers[self.output_name][:rows].clone()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream):
            accepted = self.context.execute_async_v3(self.stream.cuda_stream)
        if not accepted:
            raise BackendError("TensorRT refused to enqueue into a CUDA-graph capture: run without cuda_graph")
        graph.replay()
        self.stream.synchronize()
        replayed = self.buffers[self.output_name][:rows]
        if not torch.allclose(replayed.float(), eager.float(), rtol=1e-3, atol=1e-3):
            raise BackendError("the CUDA graph's first replay differs from the eager TensorRT run: run without "
                               "cuda_graph")  # fmt: skip
        return graph


class CudaGraphed:
    """A fixed-shape denoiser call ``fn(x, t, cond)`` captured once as a CUDA graph and replayed.

    The first call warms ``fn`` up on a side stream and captures it with static copies of its inputs;
    later calls copy their inputs into those buffers and replay the graph (no Python or kernel-launch
    overhead per layer). Shapes must not change (the stream's batch is fixed). GPU-only: not run in this
    project's CI.
    """

    def __init__(self, fn) -> None:
        self.fn = fn
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static: tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]] | None = None
        self._out: torch.Tensor | None = None

    def _call_static(self) -> torch.Tensor:
        from .conditioning import Conditioning

        x, t, cond = self._static  # type: ignore[misc]
        return self.fn(x, t, Conditioning(cond))

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond) -> torch.Tensor:
        if self._graph is None:
            if x.device.type != "cuda":
                raise BackendError("CUDA-graph capture needs CUDA tensors")
            self._static = (x.clone(), t.clone(), {n: v.clone() for n, v in cond.items()})
            side = torch.cuda.Stream(device=x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up: lazy initialisations must not be captured
                    self._call_static()
            torch.cuda.current_stream(x.device).wait_stream(side)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                self._out = self._call_static()
        else:
            sx, st, sc = self._static  # type: ignore[misc]
            sx.copy_(x)
            st.copy_(t)
            for n, v in cond.items():
                sc[n].copy_(v)
        self._graph.replay()
        return self._out.clone()  # type: ignore[union-attr]


def import_tensorrt():
    """The tensorrt module, or a BackendError that says how to get it (imported lazily, never at startup)."""
    try:
        import tensorrt as trt
    except ImportError as err:
        raise BackendError(
            "TensorRT is not installed: on a CUDA machine, pip install 'semdraw[tensorrt]' "
            "(TensorRT wheels come from NVIDIA's package index)"
        ) from err
    return trt


def check_io(network: str, tensors: Sequence[str], expected: Sequence[str]) -> None:
    """The tensors a manifest names must be the network's: one clear error (instead of a bare KeyError
    at the first call) when a plan and its manifest disagree."""
    missing = [name for name in expected if name not in set(tensors)]
    if missing:
        raise BackendError(f"{network} has no tensor {', '.join(missing)} (its tensors: {', '.join(tensors)}); "
                           "the engine set's manifest does not match its files: rebuild the set")  # fmt: skip


@functools.lru_cache(maxsize=1)
def tensorrt_logger():
    """One TensorRT logger for the process (TensorRT expects one; a new one per runner or build warns)."""
    trt = import_tensorrt()
    return trt.Logger(trt.Logger.WARNING)


def tensorrt_available() -> bool:
    """True when TensorRT imports and a CUDA device exists."""
    try:
        import_tensorrt()
    except BackendError:
        return False
    return torch.cuda.is_available()


def _trt_to_torch(trt, dtype) -> torch.dtype:
    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int64: torch.int64,
    }
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    return table[dtype]
