"""The controller's settings, read once at start-up from ``MDOPS_*`` environment variables."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from runbooks import keys
from runbooks.settings import CommonSettings

EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
# What the API server takes as an object's name (a DNS subdomain), or empty: a name it refuses would fail
# every Job (or the peering) at the first run, not the controller at its start.
ObjectName = Annotated[str, Field(pattern=rf"^({keys.DNS_SUBDOMAIN_FORM})?$")]
AnnotationKey = Annotated[
    str,
    Field(pattern=rf"^({keys.DNS_SUBDOMAIN_FORM}/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"),
]
Port = Annotated[int, Field(ge=0, le=65535)]


class ControllerSettings(CommonSettings):
    executor: Literal["local", "job"] = Field("local", description="Run as a local process or as a Job.")
    scripts_dir: Path = Field(Path("/etc/mdops/scripts"), description="Folder of scripts, one per command.")
    state_dir: Path = Field(
        Path("/var/lib/mdops"), description="Local executor: where runs keep their files."
    )
    run_folder_ttl_seconds: int = Field(
        3600,
        ge=0,
        description="Local executor: a finished run's folder (its log and result) is removed this long after "
        "its result is recorded, as a Job after MDOPS_JOB_TTL_SECONDS; never while a process of the run "
        "(one its script left behind) lives. 0: kept for good.",
    )
    max_parallel: int = Field(8, ge=1, description="Runs executing at once (local processes or Jobs).")

    runner_image: str = Field(
        "mdops:0.1.0", pattern=r"^\S+$", description="Job executor: image with the runner."
    )
    runner_command: list[str] = Field(
        ["python", "-m", "runner"], min_length=1, description="Job executor: the runner."
    )
    scripts_configmap: ObjectName = Field(
        "",
        description="Job executor: ConfigMap of your own scripts, mounted over the image's; "
        "empty: the image's reference scripts.",
    )
    job_service_account: ObjectName = Field(
        "mdops-runner",
        description="Job executor: service account of Job pods (the manifests and the chart make "
        "mdops-runner, with the rights the start claim needs); empty: the namespace's default.",
    )
    job_start_claim: bool = Field(
        True,
        description="Job executor: the runner in a Job's pod claims the run's start through the API server "
        "(a Lease named after the Job, with the pod's own token) before it runs the script, so that a second "
        "pod the Job controller makes for the same run never runs it too; the pods' service account needs "
        "create and get on leases. false: no claim, and no token in the pods.",
    )
    job_ttl_seconds: int = Field(3600, ge=0, description="Job executor: ttlSecondsAfterFinished.")
    job_start_failure_seconds: float = Field(
        60,
        ge=0,
        description="Job executor: how long a run's pod may be unable to start for a cause that lasts until "
        "someone mends it (an image that cannot be pulled, a container that cannot be created, a pod the API "
        "server refuses to create) before the "
        "run fails with exit code 125 and its Job is deleted; 0: until the run's timeout. A pod that waits "
        "for a node with room is waited for. Also how long a run whose Job the API server refuses (a quota "
        "on Jobs, an admission policy) asks again before it fails, never having run, and how long a Job "
        "pod's runner asks again when the API server refuses its start claim.",
    )
    job_pod_annotations: dict[AnnotationKey, str] = Field(
        default_factory=dict, description="Annotations for Job pods."
    )

    script_env: dict[EnvName, str] = Field(
        default_factory=dict,
        description="Variables for the scripts, beside the contract's MDOPS_* (which win over them).",
    )
    script_pass_env: list[EnvName] = Field(
        default_factory=list,
        description="Names of variables the scripts get from the runner's environment (the controller's "
        "with the local executor, the Job pod's with the Job executor), beside PATH, HOME, LANG, TZ and "
        "TMPDIR; nothing else of it reaches them.",
    )
    job_script_secret: ObjectName = Field(
        "",
        description="Job executor: a Secret of the namespace whose keys become variables of every Job pod "
        "(envFrom), for the scripts to get those named in MDOPS_SCRIPT_PASS_ENV: secrets that "
        "MDOPS_SCRIPT_ENV would put in plain text in each Job. The Job names the Secret only; the "
        "controller never reads it. Empty: none.",
    )
    gate_min_coverage: float = Field(0.99, ge=0, le=1, description="Health gate: lowest coverage ratio.")
    gate_max_backlog: int = Field(10000, ge=0, description="Health gate: largest consumer backlog.")
    gate_max_failover_latency_ms: int = Field(5000, ge=0, description="Health gate: slowest failover.")

    lock_groups: dict[str, str] = Field(
        default_factory=dict,
        description="Profile -> lock group; profiles not listed share the group 'default'.",
    )
    ledger_size: int = Field(
        1000,
        ge=10,
        description="Finished request ids remembered per namespace beyond those an existing Runbook names "
        "(the ids of deleted Runbooks: newest first).",
    )
    max_unfinished_per_namespace: int = Field(
        500,
        ge=0,
        description="Unfinished Runbooks the namespace may hold; one created beyond it fails at once "
        "(reason QuotaExceeded) without using its request id. 0: no cap.",
    )
    retention_interval_seconds: int = Field(
        300,
        ge=0,
        description="Retention: seconds between passes over the finished Runbooks (the first one a pass "
        "after the start). 0: retention off, finished Runbooks stay.",
    )
    retention_ttl_seconds: int = Field(
        604800,
        ge=0,
        description="Retention: a finished Runbook is deleted this long after it finished. 0: never by age.",
    )
    retention_successful_per_command: int = Field(
        100,
        ge=0,
        description="Retention: successful Runbooks kept per command (the newest). 0: no limit.",
    )
    retention_failed_per_command: int = Field(
        100, ge=0, description="Retention: failed Runbooks kept per command (the newest). 0: no limit."
    )
    metrics_port: Port = Field(9102, description="Port of /metrics (0: none).")
    metrics_host: str = Field("0.0.0.0", description="Address /metrics listens on.")
    peering: ObjectName = Field("", description="kopf peering name; empty: standalone (one replica).")
    peering_lifetime: int = Field(
        10, ge=1, description="Seconds before a silent peer is considered dead (the standby takes over)."
    )
    priority: int | None = Field(
        None,
        description="kopf peering priority of this replica; unset: random. Replicas with equal priorities "
        "all pause (kopf's rule), so replicas of one Deployment must not share one.",
    )
    liveness_port: Port = Field(0, description="Port of kopf's /healthz liveness endpoint (0: none).")
    watch_seconds: int = Field(
        60,
        ge=2,
        le=600,
        description="Seconds (2 to 600) each of the controller's own watches (Job executor: of Jobs and "
        "pods) lasts before the API server ends it and it is opened again from where it got to. One silent "
        "for half as long again (90 s by default: a network partition that sends no reset) is given up and "
        "opened again on a new connection.",
    )


@cache
def get_settings() -> ControllerSettings:
    return ControllerSettings()
