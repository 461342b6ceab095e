"""The status response, kept encoded for the cache version it was computed from."""

from __future__ import annotations

import asyncio
import datetime
import json
from dataclasses import dataclass, field

from api.cache import RunbookCache
from api.views import status_response


@dataclass
class StatusMemo:
    """``GET /api/ops/status`` is recomputed only when the Runbook cache changed (its version moved);
    otherwise the body encoded last time is answered as is."""

    version: int = -1
    body: bytes = b""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get(self, cache: RunbookCache, zone: datetime.tzinfo, history: int) -> bytes:
        if self.version == cache.version:
            return self.body
        async with self.lock:  # one recomputation at a time; the requests queued behind it reuse it
            if self.version != cache.version:
                # CPU work over every cached Runbook: off the event loop.
                self.version, self.body = await asyncio.to_thread(_render, cache, zone, history)
        return self.body


def _render(cache: RunbookCache, zone: datetime.tzinfo, history: int) -> tuple[int, bytes]:
    version, records = cache.snapshot()
    body = status_response(records, zone, history)
    return version, json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
