"""kopf handlers, thin: kopf brings the watch events, peering and the liveness probe; the dispatcher
(:mod:`controller.dispatcher`) and the runs (:mod:`controller.runs`) do the rest.

Only ``@kopf.on.event`` handlers: no daemon, no timer, no index, no change handler. So kopf keeps no body,
no task and no memory per Runbook (:class:`Memories`), writes no annotation or finalizer of its own, and has
no index to fill before the first event is handled. The Runbook watch asks the API server for unfinished
Runbooks only (``status.result`` is empty; the CRD makes it a selectable field): finished Runbooks never
reach the controller, not even as it starts. RunbookPolicies and RunbookApprovals are watched only to wake
the runs the gate holds (:meth:`controller.dispatcher.Dispatcher.gate_changed`). The few RunbookSchedules
have a timer each (:mod:`controller.schedules`, which uses the ``memo.api`` made here).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import kopf
from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.clients import scanning, watching
from kopf._cogs.structs import references
from kopf._core.engines import daemons, peering
from kopf._core.reactor import observation
from kopf._core.reactor.inventory import ResourceMemories, ResourceMemory

from controller import login as controller_login
from controller import metrics
from controller.dispatcher import Dispatcher
from controller.events import Events
from controller.executors.job import JobExecutor
from controller.executors.local import LocalExecutor, Sweeper
from controller.kubeapi import KubeApi
from controller.ledger import Ledger
from controller.lock import TargetLock
from controller.retention import Retention
from controller.runs import Runs, Services
from controller.settings import get_settings
from runbooks import approval, keys, policy

RUNBOOKS = (keys.GROUP, keys.VERSION, keys.PLURAL)
UNFINISHED = "status.result="  # the selectable field is empty (absent) until the run has finished
# An object's kopf worker lingers this long after its last event (kopf's default: 5 s); a burst's
# thousands of Runbooks each have one, and each event is handled at once.
IDLE_WORKER_SECONDS = 0.5
# kopf's retries of a failed request (an API server restarting, overloaded or unreachable): kopf's own
# delays grow to 13 and 21 s, so a watch found the restarted API server up to 21 s late (a failover waited
# that long); these retry every 2 s, for about a minute, as long as before.
ERROR_BACKOFFS = (0.5, 1.0, *(2.0,) * 30)
# How long a deleted schedule's kopf worker waits for a look under way (a few API calls) to end.
LOOK_END_SECONDS = 5.0
# Between two discoveries of the kinds kopf did not find (rediscover): then every minute.
REDISCOVERY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)

log = logging.getLogger(__name__)


class Memories(ResourceMemories):
    """kopf's memory of the objects it watches, kept only for the objects that need one, which also
    tells the dispatcher that kopf pauses.

    kopf keeps a memory per object it has seen until the object's deletion (a copy of the memo, an error
    throttler, an indexing and a daemons memory with its set: about 0.7 KB). Only a RunbookSchedule's timer
    lives in it; the other kinds have ``@kopf.on.event`` handlers only, which need nothing from one event to
    the next. Their memory is made for the event and dropped with it: a burst's thousands of waiting
    Runbooks (and their Jobs and pods) no longer each hold one, scattered through the memory the burst
    filled, which kept that memory from being given back after the burst (see the README's performance
    section). A kind not named here keeps kopf's memory: the safe side."""

    EVENTS_ONLY = frozenset({keys.KIND, policy.KIND, approval.KIND, "Job", "Pod"})

    async def recall(
        self,
        raw_body: kopf.RawBody,
        *,
        memobase: kopf.Memo | None = None,
        noticed_by_listing: bool = False,
        ephemeral: bool = False,
    ) -> ResourceMemory:
        ephemeral = ephemeral or raw_body.get("kind") in self.EVENTS_ONLY
        return await super().recall(
            raw_body, memobase=memobase, noticed_by_listing=noticed_by_listing, ephemeral=ephemeral
        )


MEMORIES = Memories()


class Pauses:
    """kopf's pause, as kopf itself holds it, followed by the dispatcher.

    kopf pauses the operator while a replica with a higher priority is active (peering) and tells only its
    own parts: one set of toggles, ``operator_paused``, which its watchers and its daemon killer wait on. It
    hands them to its daemon killer as it starts; wrapped here, the daemon killer hands them on, and
    :meth:`follow` pauses the dispatcher when kopf pauses and resumes it when kopf resumes, on the same
    toggles, so never out of step with kopf. (A signal of our own, kopf's listing of the peering object as
    it resumes, once resumed a paused replica for a second: a listing already on its way when kopf paused.)
    As kopf exits, the dispatcher pauses: its runs go on, for the next controller to adopt. kopf is pinned
    exactly; the peering tests (tests/cluster/test_executors.py, test_guarantees.py) guard this."""

    def __init__(self) -> None:
        self.toggles: aiotoggles.ToggleSet | None = None
        self.found = asyncio.Event()
        self.on_exit: Callable[[], None] = lambda: None

    def wrap(
        self, killer: Callable[..., Coroutine[Any, Any, None]]
    ) -> Callable[..., Coroutine[Any, Any, None]]:
        @functools.wraps(killer)
        async def daemon_killer(*, operator_paused: aiotoggles.ToggleSet, **options: Any) -> None:
            self.toggles = operator_paused
            self.found.set()
            try:
                await killer(operator_paused=operator_paused, **options)
            finally:
                self.on_exit()

        return daemon_killer

    def catch_up(self, dispatcher: Dispatcher) -> None:
        """Resume the dispatcher now if kopf has resumed and :meth:`follow` has not come yet: kopf's events
        (and the end of its listing) can come first, and the dispatcher would drop them. On kopf's own
        toggles, as :meth:`follow`: never out of step with kopf."""
        if dispatcher.paused and self.toggles is not None and self.toggles.is_off():
            dispatcher.resume()

    async def follow(self, dispatcher: Dispatcher) -> None:
        await self.found.wait()
        assert self.toggles is not None
        while True:
            await self.toggles.wait_for(True)
            dispatcher.pause()
            await self.toggles.wait_for(False)
            dispatcher.resume()


PAUSES = Pauses()
daemons.daemon_killer = PAUSES.wrap(daemons.daemon_killer)


class Listings:
    """The end of each of kopf's listings of the Runbooks, told to the dispatcher with the uids it listed.

    kopf lists the Runbooks as it starts and as it resumes, then watches them; it hands each listed Runbook
    to a worker of its own, which calls the event handler when it gets to it, in no set order, and no handler
    is told when the listing is over. Its watcher's stream says so (kopf's ``LISTED`` bookmark, which it
    keeps for its indexes: the controller has none); wrapped here, it tells
    :meth:`controller.dispatcher.Dispatcher.listing_ended`, which admits nothing before. By then every
    listed Runbook is in the backlog of its worker. kopf is pinned exactly; the cap's restart tests
    (tests/cluster/test_gate.py) guard this: without the wrap nothing would ever be admitted."""

    def __init__(self) -> None:
        self.ended: Callable[[set[str]], None] = lambda uids: None

    def wrap(self, watch: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        @functools.wraps(watch)
        def infinite_watch(
            *,
            resource: references.Resource,
            operator_paused: aiotoggles.ToggleSet | None = None,
            **options: Any,
        ) -> AsyncIterator[Any]:
            stream = watch(resource=resource, operator_paused=operator_paused, **options)
            if (resource.group, resource.plural) != (keys.GROUP, keys.PLURAL):
                return stream
            return self._follow(stream, operator_paused)

        return infinite_watch

    async def _follow(
        self, stream: AsyncIterator[Any], paused: aiotoggles.ToggleSet | None
    ) -> AsyncIterator[Any]:
        """A listing that ends while kopf is paused (its listing goes on as kopf pauses) is not told: the
        dispatcher dropped what it brought, and kopf lists again as it resumes, the listing that counts."""
        listed: set[str] = set()
        async for event in stream:
            if event is watching.Bookmark.LISTED:
                if paused is None or paused.is_off():
                    self.ended(listed)
                listed = set()
            elif isinstance(event, dict) and event.get("type") is None:  # listed, not watched
                listed.add(event["object"]["metadata"]["uid"])
            yield event


LISTINGS = Listings()


def listing_ended(dispatcher: Dispatcher, uids: set[str]) -> None:
    PAUSES.catch_up(dispatcher)
    dispatcher.listing_ended(uids)


watching.infinite_watch = LISTINGS.wrap(watching.infinite_watch)


INSIGHTS = references.Insights()  # what kopf serves, handed to it by kopf.run(): see rediscover()


async def rediscover(settings: kopf.OperatorSettings, registry: kopf.OperatorRegistry) -> None:
    """Discover again the kinds that kopf did not find as it started, until it has found them all.

    kopf discovers the kinds it serves once, as it starts: its scanning (a watch of the CRDs, which makes it
    look again) is off, as the controller's role is namespaced. A starting API server (restarted, upgraded)
    can answer that discovery without some groups, and a CRD applied together with the controller (GitOps)
    can come after it: kopf then never watched the Runbooks, or the Jobs, and the controller looked alive
    and ran nothing until restarted. What kopf found stays served: only the missing kinds are added. So is
    the KopfPeering kind with peering: kopf keeps a replica paused while it lacks it, for good (it looked
    alive, and never acted)."""
    await INSIGHTS.ready_resources.wait()
    selectors = (
        registry._indexing.get_all_selectors()
        | registry._watching.get_all_selectors()
        | registry._spawning.get_all_selectors()
        | registry._changing.get_all_selectors()
    )
    peerings = list(peering.guess_selectors(settings=settings)) if settings.peering.mandatory else []
    for attempt in itertools.count():
        missing = [selector for selector in selectors if not selector.select(INSIGHTS.watched_resources)]
        if not any(selector in INSIGHTS.backbone for selector in peerings):  # kopf needs one of them
            missing += peerings
        if not missing:
            return
        pause = REDISCOVERY_SECONDS[min(attempt, len(REDISCOVERY_SECONDS) - 1)]
        kinds = (
            f"{selector.plural or selector.any_name}.{selector.group}".rstrip(".") for selector in missing
        )
        names = ", ".join(sorted(kinds))
        log.warning(
            "the API server does not list %s (yet): not watched; discovering again in %.0f s", names, pause
        )
        await asyncio.sleep(pause)
        groups = {selector.group for selector in missing}
        found = await scanning.scan_resources(
            groups=None if None in groups else groups, settings=settings, logger=log
        )
        resources = {*found, *INSIGHTS.watched_resources}
        async with INSIGHTS.revised:
            observation.revise_resources(
                group=None, insights=INSIGHTS, registry=registry, resources=resources
            )
            await INSIGHTS.backbone.fill(resources=resources)
            INSIGHTS.revised.notify_all()


class Blind(kopf.DiffBaseStorage):
    """No diff-base: event handlers need none, and kopf would otherwise deep-copy every body it sees."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


@kopf.on.login()
async def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    return controller_login.login(get_settings(), trust_env=settings.networking.trust_env)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = get_settings()
    settings.posting.level = logging.WARNING  # transitions are posted as Events explicitly
    settings.peering.lifetime = config.peering_lifetime
    settings.peering.mandatory = bool(config.peering)
    settings.watching.server_timeout = 300
    settings.networking.error_backoffs = ERROR_BACKOFFS
    settings.watching.field_selectors[keys.GROUP, keys.PLURAL] = UNFINISHED
    settings.persistence.diffbase_storage = Blind()
    settings.queueing.idle_timeout = IDLE_WORKER_SECONDS
    # A schedule deleted while its look is in an API call: kopf waits up to this long for the look to end,
    # then looks again every second, rather than (its defaults) a few event-loop steps, then a minute.
    settings.background.instant_exit_timeout = LOOK_END_SECONDS
    settings.background.cancellation_polling = 1.0
    # No watch of the CRDs: the controller's role is namespaced (rediscover() looks for what is missing).
    settings.scanning.disabled = True

    # First: a port taken since python -m controller looked fails the startup, which kopf tries again,
    # before anything is started that a second attempt would start again beside it.
    metrics.serve(config.metrics_host, config.metrics_port)
    api = KubeApi(
        functools.partial(controller_login.login, config, trust_env=settings.networking.trust_env),
        watch_seconds=config.watch_seconds,
    )
    executor = JobExecutor(config, api) if config.executor == "job" else LocalExecutor(config)
    events = Events(api, f"{config.namespace}-{secrets.token_hex(4)}")
    runs = Runs(Services(config, api, Ledger(api), TargetLock(api, executor.may_run), executor, events))
    dispatcher = Dispatcher(runs, config)
    LISTINGS.ended = functools.partial(listing_ended, dispatcher)
    PAUSES.on_exit = dispatcher.pause
    memo.api, memo.dispatcher, memo.executor, memo.events = api, dispatcher, executor, events
    memo.tasks = [
        asyncio.create_task(dispatcher.run(), name="dispatcher"),
        asyncio.create_task(PAUSES.follow(dispatcher), name="kopf's pause"),
        asyncio.create_task(dispatcher.trimmer.run(), name="ledger trimmer"),
        asyncio.create_task(Retention(api, config, lambda: dispatcher.paused).run(), name="retention"),
        asyncio.create_task(events.run(), name="events"),
        asyncio.create_task(rediscover(settings, kopf.get_default_registry()), name="rediscovery"),
    ]
    if isinstance(executor, LocalExecutor):  # ready before the first run, not started by it
        memo.tasks.append(asyncio.create_task(executor.launcher.start(), name="launcher"))
        # Only while this replica is the active one and has seen every unfinished Runbook (listed).
        sweeper = Sweeper(config, lambda: dispatcher.listed, dispatcher.in_view)
        memo.tasks.append(asyncio.create_task(sweeper.run(), name="run folders"))
    else:  # its own watches of Jobs and pods, from now on (not kopf's, which lists them all first)
        memo.tasks.append(asyncio.create_task(executor.follow(), name="jobs and pods"))
        kept = executor.let_go_kept_for_nothing(lambda: not dispatcher.paused)
        memo.tasks.append(asyncio.create_task(kept, name="kept pods"))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for task in memo.tasks:
        task.cancel()
    await memo.api.close()


@kopf.on.event(*RUNBOOKS)
async def runbook(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    PAUSES.catch_up(memo.dispatcher)
    memo.dispatcher.observe(event["type"], event["object"])


@kopf.on.event(keys.GROUP, keys.VERSION, policy.PLURAL)
async def runbook_policy(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A policy changed: the runs held at the gate are looked at again (it applies to runs not started).
    Listed ones too (type None): kopf lists again after a watch it could not resume (410 Gone, as after the
    API server restarted), and a change made meanwhile comes only in that listing."""
    memo.dispatcher.gate_changed()


@kopf.on.event(keys.GROUP, keys.VERSION, approval.PLURAL)
async def runbook_approval(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A decision on a request: its run, if the gate holds it, is counted again (listed ones too, as
    policies)."""
    memo.dispatcher.gate_changed(event["object"]["spec"]["requestId"])
