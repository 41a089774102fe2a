"""The Serve deployment class (imports Ray Serve and FastAPI: only loaded when serving).

Module level, without ``from __future__ import annotations`` on purpose: FastAPI must see the handlers'
annotations (``WebSocket``) as classes through Serve's class-based view, and Ray pickles the class by reference.
"""


from typing import Any

import torch
from fastapi import FastAPI, WebSocket
from fastapi.responses import Response
from ray import serve

from semdraw.networks import torch_threads_beside

from .app import ServeOptions, open_host, overlay_colors, page
from .replica import Replica
from .sessions import session_store

web = FastAPI(title="semdraw-serve", docs_url=None, redoc_url=None, openapi_url=None)


@serve.deployment(name="painters")
@serve.ingress(web)
class Painters:
    """One replica: a host over one set of networks, its painters' sockets, the page and /healthz."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.options = ServeOptions(**config)
        threads = self.options.torch_threads()
        torch.set_num_threads(threads)  # what the networks open with
        context = serve.get_replica_context()
        name = context.replica_id.unique_id if context is not None else "replica"
        host = open_host(self.options)
        torch.set_num_threads(torch_threads_beside(host.networks, threads))
        self.replica = Replica(host, session_store(), self.options.token, name=name,
                               origins=tuple(self.options.origins),
                               edits_per_second=self.options.edits_per_second,
                               painters_per_address=self.options.painters_per_address,
                               max_clients=self.options.painters_per_replica, threads=threads)  # fmt: skip
        self.started = False

    def _start(self) -> None:
        if not self.started:  # the tick loop needs the replica's running event loop: started on first use
            self.replica.start()
            self.started = True

    @web.get("/")
    async def index(self) -> Response:
        body, media = page()
        return Response(body, media_type=media)

    @web.get("/app.js")
    async def script(self) -> Response:
        body, media = page("app.js")
        return Response(body, media_type=media)

    @web.get("/style.css")
    async def style(self) -> Response:
        body, media = page("style.css")
        return Response(body, media_type=media)

    @web.get("/colors.json")
    async def colors(self) -> dict[str, Any]:
        return overlay_colors()

    @web.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        self._start()
        replicas = await self.replica.store.replicas_alive.remote()
        replicas[self.replica.name] = self.replica.health()
        return {"replica": self.replica.name, "replicas": len(replicas),
                "painters": sum(r["painters"] for r in replicas.values()),
                "rows_per_second": round(sum(r["rows_per_second"] for r in replicas.values()), 1),
                "canvas": [self.replica.host.height, self.replica.host.width], "by_replica": replicas}  # fmt: skip

    @web.websocket("/ws")
    async def painter(self, ws: WebSocket) -> None:
        self._start()
        await self.replica.serve(ws)

    def check_health(self) -> None:
        problem = self.replica.healthy()
        if problem:
            raise RuntimeError(f"the networks keep failing: {problem}")

    async def __del__(self) -> None:
        await self.replica.shutdown()
