"""``python -m controller``: the Runbook controller; settings from ``MDOPS_*`` (controller/settings.py)."""

from __future__ import annotations

import datetime
import logging
import secrets
import sys

from pydantic import ValidationError

from controller import audit
from controller.settings import ControllerSettings, get_settings
from runbooks.kube import NotLoopbackError
from runbooks.settings import cannot_listen, problems


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kopf says "Handler 'runbook' succeeded" for every watch event: thousands of lines in a burst.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    audit.configure()
    try:
        settings = get_settings()
    except ValidationError as error:  # which variable, without a traceback or the values (a script's secrets)
        print(
            f"python -m controller: invalid settings: {problems(error, ControllerSettings)}", file=sys.stderr
        )
        return 2
    # A port that cannot be listened on (taken, an address not of this host) would fail kopf's startup
    # activity, retried every minute for ever (its tasks started again each time) in a pod that looks Running.
    for host, port, names in (
        (settings.metrics_host, settings.metrics_port, "MDOPS_METRICS_HOST, MDOPS_METRICS_PORT"),
        ("0.0.0.0", settings.liveness_port, "MDOPS_LIVENESS_PORT"),
    ):
        if problem := cannot_listen(host, port):
            print(
                f"python -m controller: cannot listen on {host}:{port} ({names}): {problem}", file=sys.stderr
            )
            return 2
    # Every run records the venue's session it starts in (window: auto is chosen by it): started first,
    # the calendar's load (a child process, unless MDOPS_CALENDAR_CACHE kept the table) overlaps the rest.
    settings.calendar.prefetch(datetime.datetime.now(datetime.UTC))

    # kopf imports the official client when it is installed, only to recognise that client's objects (in
    # kopf.adopt() and the like), which the controller never hands it; that import alone is ~0.9 s of
    # every start. The controller logs in without it (controller/login.py): as far as kopf can tell, it
    # is absent.
    sys.modules.setdefault("kubernetes", None)
    import kopf

    # Registers the handlers: the Runbooks' events (handlers) and the schedules' timer (schedules).
    from controller import handlers, login, schedules  # noqa: F401

    # Credentials that cannot be read (no service account mounted, no kubeconfig file) stay so: kopf would
    # retry its startup every minute for ever, a traceback each time, in a pod that looks Running.
    try:
        login.login(settings)
    except (kopf.LoginError, NotLoopbackError, OSError, ValueError) as error:
        print(f"python -m controller: cannot log in to the API server: {error}", file=sys.stderr)
        return 2
    kopf.run(
        memories=handlers.MEMORIES,
        insights=handlers.INSIGHTS,
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
