"""The window as a client: ``semdraw-live --server URL`` paints here and shows a server's frames.

:class:`RemoteStream` stands where the window's :class:`semdraw.Stream` stands (canvas, steps, layers,
noise levels for the alpha slider, ``idle``, a call that returns the newest frame), and
:class:`RemoteSync` where its :class:`semdraw.StreamSync` stands: it sends the edits that turn the
composition the server has into the one the window holds (``semdraw.edits.diff``), and reads rows,
refusals and messages from the server's status. Underneath, one :class:`semdraw.serve.client.PainterClient`
runs on its own asyncio thread and reconnects by itself, as the page does.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from semdraw.api import Composition, StreamConfig
from semdraw.edits import diff
from semdraw.errors import SemdrawError
from semdraw.stream_sync import RowAssignment


def parse_server(url: str, token: str | None) -> tuple[str, str, str]:
    """(http base, ws URL, token) from what ``semdraw-serve`` prints (``http://host:port/?token=...``)."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SemdrawError(f"--server {url}: give the URL semdraw-serve printed, e.g. http://127.0.0.1:8000/?token=...")
    query = urllib.parse.parse_qs(parts.query)
    token = token or (query.get("token") or [""])[0]
    if not token:
        raise SemdrawError("--server: the URL carries no ?token=...; pass --token or set SEMDRAW_TOKEN")
    ws = f"{'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}/ws"
    return f"{parts.scheme}://{parts.netloc}", ws, token


def server_canvas(base: str, timeout: float = 10.0) -> tuple[int, int]:
    """The canvas every painter of the server shares (its /healthz), or one line saying why not."""
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=timeout) as reply:
            height, width = json.loads(reply.read())["canvas"]
    except (OSError, ValueError, KeyError) as err:
        raise SemdrawError(f"--server {base}: no semdraw-serve answers there ({err})") from None
    return int(height), int(width)


@dataclass
class _Schedule:
    noise_level: torch.Tensor


@dataclass
class _Prompts:
    name: str
    vocabulary: tuple[str, ...] = ()


class RemoteStream:
    """What the window reads from a stream, served by a remote replica. ``__call__`` returns the newest
    frame (waiting briefly for one); ``idle`` is True while no new frame came."""

    def __init__(self, base: str, ws_url: str, token: str, composition: Composition, config: StreamConfig) -> None:
        from semdraw.serve.client import PainterClient

        self.base = base
        self.height, self.width = composition.height, composition.width
        self.client = PainterClient(ws_url, token, composition, config, frame_format="png")
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="semdraw-remote", daemon=True)
        self._thread.start()
        self._seen = -1
        self.idle = False
        self.prompts = _Prompts(f"server {base}")
        self.wait_welcome()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.client.run())

    def call(self, coroutine: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def wait_welcome(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.client.connections == 0 and time.monotonic() < deadline:
            if self.client.refused:
                raise SemdrawError(f"the server refused this painter: {self.client.refused}")
            time.sleep(0.05)
        if self.client.connections == 0:
            raise SemdrawError(f"no welcome from {self.base} within {timeout:.0f} s")

    @property
    def steps(self) -> int:
        return int(self.client.welcome.get("steps", 1))

    @property
    def layers(self) -> int:
        return int(self.client.welcome.get("layers", 1))

    @property
    def sched(self) -> _Schedule:
        return _Schedule(torch.tensor(self.client.welcome.get("noise_levels") or [1.0]))

    def __call__(self) -> np.ndarray | None:
        deadline = time.monotonic() + 0.05
        while time.monotonic() < deadline:
            frame = self.client.frame
            if frame is not None and frame.number != self._seen:
                self._seen, self.idle = frame.number, False
                return frame.image
            time.sleep(0.005)
        self.idle = True
        return None if self.client.frame is None else self.client.frame.image

    def close(self) -> None:
        """Close the connection (a bounded wait: quitting the window never hangs on the network)."""
        import concurrent.futures

        try:
            self.call(self.client.close(), timeout=5)
        except (concurrent.futures.TimeoutError, RuntimeError):
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


class RemoteSync:
    """The window's StreamSync for a remote stream: sends the edits between compositions; rows, refusals
    and messages come from the server's status."""

    def __init__(self, stream: RemoteStream) -> None:
        self.stream = stream
        self.applied: Composition | None = None
        self.failed: dict[str, str] = {}
        self.notes: dict[str, list[str]] = {}

    def apply(self, composition: Composition) -> RowAssignment:
        client = self.stream.client
        before = self.applied or self.stream.call(_composition(client))
        for edit in diff(before, composition):
            self.stream.call(client.edit(edit))
        self.applied = composition
        return self.assignment

    @property
    def assignment(self) -> RowAssignment:
        status = self.stream.client.status
        background = bool(self.applied and self.applied.background.prompt and self.applied.background.image is None)
        return RowAssignment(dict(status.get("rows") or {}), tuple(status.get("refused") or ()), background)

    def messages(self) -> list[str]:
        return list(self.stream.client.status.get("messages") or []) + self.stream.client.errors[-1:]

    def shown(self) -> Composition | None:
        if self.applied is None:
            return None
        refused = set(self.assignment.refused)
        return replace(self.applied, brushes=tuple(replace(b, enabled=False) if b.name in refused else b
                                                   for b in self.applied.brushes))  # fmt: skip


async def _composition(client: Any) -> Composition:
    return client.composition
