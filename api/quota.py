"""Per token: how fast it may create Runbooks (a rate) and how many may be unfinished at once (a cap), so one
token with one execute permission cannot fill etcd or occupy every slot of the controller.

The rate is a moving window of the ``limits`` library (exact, unlike a fixed window, which lets twice the rate
through around a window's edge), kept in this process's memory: each API replica counts its own requests.
The cap is counted from the watch cache: the Runbooks whose ``requestedBy`` is the token's name and that have
not finished. Both are checked only when a request would create a Runbook: asking again for a request id
that exists costs nothing.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from api.auth import Principal
from api.cache import RunbookCache
from api.errors import ApiError


class TooManyRequests(ApiError):
    status_code = 429


class Quota:
    def __init__(self, rate: str, max_unfinished: int, cache: RunbookCache):
        self.rates: list[RateLimitItem] = parse_many(rate) if rate.strip() else []
        self.max_unfinished = max_unfinished
        self.cache = cache
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def check(self, principal: Principal) -> None:
        """Raise a 429 when ``principal`` may not create a Runbook now."""
        for rate in self.rates:
            if not self.limiter.test(rate, principal.name):
                reset = self.limiter.get_window_stats(rate, principal.name).reset_time
                retry = max(1, math.ceil(reset - time.time()))
                raise TooManyRequests(
                    f"token {principal.name!r} may create {rate} runbooks (MDOPS_API_EXECUTE_RATE); "
                    f"retry in {retry}s",
                    {"Retry-After": str(retry)},
                )
        unfinished = self.cache.unfinished(principal.name)
        if self.max_unfinished and unfinished >= self.max_unfinished:
            raise TooManyRequests(
                f"token {principal.name!r} has {unfinished} unfinished runbooks, as many as "
                f"MDOPS_API_MAX_UNFINISHED_PER_TOKEN allows: wait for one to finish"
            )

    def spend(self, principal: Principal) -> None:
        """Count a Runbook ``principal`` created."""
        for rate in self.rates:
            self.limiter.hit(rate, principal.name)
