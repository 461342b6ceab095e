"""``python -m controller``: the Runbook controller; settings from ``MDOPS_*`` (controller/settings.py)."""

from __future__ import annotations

import datetime
import logging
import secrets
import sys

# kopf imports the official client when it is installed, only to recognise that client's objects (in
# kopf.adopt() and the like), which the controller never hands it; the import alone is ~0.9 s of every
# start. The controller logs in without it (controller/login.py), so, as far as kopf can tell, it is absent.
sys.modules.setdefault("kubernetes", None)

import kopf  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from controller import audit  # noqa: E402
from controller.settings import get_settings  # noqa: E402


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kopf says "Handler 'runbook' succeeded" for every watch event: thousands of lines in a burst.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    audit.configure()
    try:
        settings = get_settings()
    except ValidationError as error:
        print(f"invalid controller settings:\n{error}", file=sys.stderr)
        return 2
    settings.calendar.prefetch(datetime.datetime.now(datetime.UTC))  # window: auto needs it, in seconds
    # Registers the handlers: the Runbooks' events (handlers) and the schedules' timer (schedules).
    from controller import handlers, schedules  # noqa: F401

    handlers.register(settings)

    kopf.run(
        memories=handlers.MEMORIES,
        clusterwide=False,
        namespaces=[settings.namespace],
        standalone=not settings.peering,
        peering_name=settings.peering or None,
        priority=settings.priority if settings.priority is not None else secrets.randbelow(2**31),
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz"
        if settings.liveness_port
        else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
