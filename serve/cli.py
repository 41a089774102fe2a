"""`semdraw-serve`: serve the painting page and painters' WebSockets from a local Ray instance or a cluster."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

from semdraw.build_engines.cache import engine_set_for, fastest_backend
from semdraw.choices import BACKENDS, DEFAULT_LAYERS
from semdraw.errors import SemdrawError
from semdraw.loading import MODEL_HELP
from semdraw.quiet import quiet_libraries
from semdraw.tools import canvas_side

from .app import APP_NAME, INGRESSES, ServeOptions, build_app, ingress_environment

log = logging.getLogger("semdraw.serve")


def port_in_use(host: str, port: int) -> str | None:
    """Why Serve's proxy could not listen on ``host:port`` here (something else listens there, the address
    is not this machine's), or None."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
            probe.bind((host, port))
    except OSError as err:
        return f"cannot listen on {host}:{port} ({err.strerror or err}): pass another --port or --host"
    return None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _cpus_per_replica(args: argparse.Namespace) -> float:
    """A local instance is this machine alone: its replicas share its cores (a CPU replica computes on
    them); on a cluster, a replica asks for one CPU unless told (its GPU does the work)."""
    if args.cpus_per_replica is not None:
        return args.cpus_per_replica
    return 1.0 if args.address else max(1.0, float((os.cpu_count() or 1) // (args.max_replicas or args.replicas)))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="semdraw-serve",
        description="Serve semdraw to painters over the network (Ray Serve): a browser page at / and one "
        "WebSocket per painter at /ws (docs/protocol.md). With no arguments: the embedded toy model on the "
        "CPU, one replica on a local Ray instance, at http://127.0.0.1:8000/. Ctrl-C stops it.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default="toy", help=MODEL_HELP)
    src.add_argument("--engines", type=Path, default=None, help="an engine set folder from build-engines")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="how the networks run (default auto: for --model the backend that runs it fastest, "
                   "onnxruntime for the toy on a local CPU instance, about twice torch's speed, else torch; "
                   "TensorRT else onnxruntime for --engines). onnxruntime or tensorrt with --model build its "
                   "engine set here once (cached in $SEMDRAW_CACHE, else ~/.cache/semdraw; on a cluster pass "
                   "--engines on storage every node reads)")  # fmt: skip
    p.add_argument("--height", type=canvas_side, default=None, help="the canvas every painter shares (default: native)")
    p.add_argument("--width", type=canvas_side, default=None, help="the canvas every painter shares (default: native)")
    p.add_argument("--replicas", type=_positive, default=1, help="replicas (one host each; one per GPU) (default 1)")
    p.add_argument("--max-replicas", type=_positive, default=None,
                   help="autoscale on open painters from --replicas up to this many")
    p.add_argument("--painters-per-replica", type=_positive, default=8,
                   help="WebSockets (painters) one replica takes; more are refused and retry (default 8)")
    p.add_argument("--capacity-rows", type=_positive, default=None,
                   help="the most denoiser rows of one call on a replica (default: unbounded)")
    p.add_argument("--gpus-per-replica", type=float, default=0.0, help="GPUs each replica asks Ray for (default 0)")
    p.add_argument("--cpus-per-replica", type=float, default=None,
                   help="CPUs each replica asks Ray for (default: 1 on a cluster; on a local instance, this machine's "
                   "cores shared among the replicas)")  # fmt: skip
    p.add_argument("--threads", type=_positive, default=None,
                   help="CPU threads of each replica's networks, torch and onnxruntime alike (default: the whole CPUs it asks for)")
    p.add_argument("--painters-per-address", type=int, default=8,
                   help="painters one remote address may hold open on a replica; behind a reverse proxy every "
                   "painter has the proxy's address: raise it or pass 0 for no limit (default 8)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="the HTTP port (default 8000)")
    p.add_argument("--ingress", choices=tuple(INGRESSES), default="proxy",
                   help="how painters reach the replicas on a local instance: "
                   + "; ".join(f"{name}: {i.summary}" for name, i in INGRESSES.items())
                   + " (default proxy; a cluster's own settings decide there)")  # fmt: skip
    p.add_argument("--address", default=None, help="join this Ray cluster (e.g. auto, or ray://head:10001) instead of "
                   "starting a local instance")  # fmt: skip
    p.add_argument("--token", default=None, help="the token painters must present (default: $SEMDRAW_TOKEN, else a "
                   "new random one, printed in the URL)")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_libraries()
    parser = _parser()
    args = parser.parse_args(argv)
    if args.max_replicas is not None and args.max_replicas < args.replicas:
        parser.error(f"--max-replicas {args.max_replicas} is below --replicas {args.replicas} (autoscaling goes "
                     "from --replicas up to --max-replicas)")  # fmt: skip
    if args.address and INGRESSES[args.ingress].ray_environment:
        parser.error(f"--ingress {args.ingress} chooses how a local instance starts; on a cluster set "
                     + " ".join(f"{k}={v}" for k, v in INGRESSES[args.ingress].ray_environment)
                     + " where its nodes start (docs/serving.md)")  # fmt: skip
    try:
        import ray.serve  # noqa: F401 - installed? (used once Ray starts, below)
    except ImportError:
        log.error("semdraw-serve needs Ray Serve: pip install -e '.[serve]'")
        return 2
    token = args.token or os.environ.get("SEMDRAW_TOKEN") or secrets.token_urlsafe(18)
    options = ServeOptions(model=args.model, engines=str(args.engines) if args.engines else None, backend=args.backend,
                           height=args.height, width=args.width, token=token, replicas=args.replicas,
                           max_replicas=args.max_replicas, painters_per_replica=args.painters_per_replica,
                           capacity_rows=args.capacity_rows, num_gpus=args.gpus_per_replica,
                           num_cpus=_cpus_per_replica(args), threads=args.threads,
                           painters_per_address=args.painters_per_address)  # fmt: skip
    import semdraw

    try:
        if not args.address:  # a local instance listens here: its ports must be free
            if busy := port_in_use(args.host, args.port):
                raise SemdrawError(busy)
            for what, variable, port in INGRESSES[args.ingress].ports_beside():
                if port_in_use("0.0.0.0", port):  # every interface: where the ingress listens on it
                    raise SemdrawError(f"{what} (--ingress {args.ingress}) cannot listen on port {port}, "
                                       f"something else does: set {variable} to another port")  # fmt: skip
        if args.engines is None:  # a model that cannot load here fails in one line before Ray starts
            semdraw.loading.check_source(args.model)
            semdraw.loading.check_canvas(args.model, args.height, args.width)
            # auto: the model's fastest backend on a CPU (onnxruntime for the toy), where replicas run on this
            # machine's CPU and can read a set built here
            local_cpu = not args.address and not args.gpus_per_replica
            backend = fastest_backend(args.model, args.backend) if local_cpu else args.backend
            # the model's engine set, built here once and reused after (None: torch modules)
            engines = engine_set_for(args.model, args.height, args.width, DEFAULT_LAYERS, backend, args.backend)
            if engines is not None:
                options = replace(options, engines=str(engines), backend=backend)
            elif not args.address and semdraw.loading.source_fingerprint(args.model) is None:
                # a hub model not in this machine's cache: loaded here once, where a failure is one line
                # (offline: what to fetch) rather than every replica's traceback; the replicas find it cached
                semdraw.load_model(args.model, device="cpu")
        elif not args.address:  # a local instance's replicas read the set from here: a wrong folder fails now
            semdraw.engines.read_manifest(args.engines)
    except SemdrawError as err:
        log.error("semdraw-serve: %s", err)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with ingress_environment(args.ingress):
        return _serve(args, options, token, stop)


def _serve(args: argparse.Namespace, options: ServeOptions, token: str, stop: threading.Event) -> int:
    """Ray, Serve and the application until ``stop`` (or Ctrl-C); everything stopped after."""
    import ray
    from ray import serve

    try:
        ray.init(address=args.address, namespace="semdraw", include_dashboard=False, logging_level=logging.WARNING)
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(build_app(options), name=APP_NAME, route_prefix="/")
        log.info("semdraw-serve: open http://%s:%d/?token=%s  (Ctrl-C stops)", args.host, args.port, token)
        stop.wait()
    except KeyboardInterrupt:
        pass
    except (RuntimeError, ConnectionError, ValueError) as err:
        log.error("semdraw-serve: %s", str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__)
        return 2
    finally:
        if ray.is_initialized():
            log.info("semdraw-serve: stopping")
            serve.shutdown()
            ray.shutdown()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
