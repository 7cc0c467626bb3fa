"""The kubernetes backend against a CONTRACT FAKE of the API server (tests/k8s_fake.py), not a
real cluster: none installs offline here. The fake validates every Job the backend POSTs against
the official batch/v1 OpenAPI schema (strictly), checks each path and method against the spec,
and answers with meta/v1 Status errors; tests play the Job controller through it.

The last tests run jobs through the scheduler (`Scheduler` + `drain_once`), not only the class.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from core.backends.kube_auth import Cluster, StaticToken
from core.backends.kubernetes import (
    LABEL_JOB,
    LABEL_TENANT,
    MANAGED_BY,
    KubeOptions,
    KubernetesBackend,
    job_name,
    label_value,
)
from core.config import Settings
from core.errors import BackendError, ConfigError, ExecutionLost, StartRefused
from core.models import ExecutionRef, JobSpec, JobState
from core.scheduler import Scheduler
from core.stores.memory import MemoryStore
from tests.k8s_fake import KubeFake
from tests.kubernetes.conftest import NAMESPACE, SERVER, TOKEN, MakeBackend, make_job

ROOT = Path(__file__).resolve().parents[2]


def env_of(container: dict[str, object]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}  # type: ignore[attr-defined]


# -- start -----------------------------------------------------------------------------------


async def test_start_creates_a_valid_job(fake: KubeFake, backend: KubernetesBackend) -> None:
    job = make_job(cpu="500m", memory="512Mi", maxRuntimeSeconds=5400, recordingMode="gallery_view")
    ref = await backend.start(job)

    name = f"botsched-{job.id}"
    assert ref == ExecutionRef(backend="kubernetes", id=name)
    assert fake.invalid == [] and fake.creates[name] == 1  # spec-validated, strictly
    created = fake.jobs[name]
    assert (created["apiVersion"], created["kind"]) == ("batch/v1", "Job")
    labels = {LABEL_JOB: job.id, LABEL_TENANT: "acme", MANAGED_BY: "bot-scheduler"}
    assert created["metadata"]["labels"] == labels
    assert created["metadata"]["annotations"] == {LABEL_JOB: job.id, LABEL_TENANT: "acme"}
    spec = created["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 5400
    assert spec["ttlSecondsAfterFinished"] == 3600
    pod = spec["template"]["spec"]
    assert spec["template"]["metadata"]["labels"] == labels
    assert pod["restartPolicy"] == "Never"
    assert pod["terminationGracePeriodSeconds"] == 8  # BOT_STOP_GRACE_SECONDS=7.5, rounded up
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    (container,) = pod["containers"]
    assert (container["name"], container["image"]) == ("bot", "registry.test/meet-bot:1.2")
    quantities = {"cpu": "500m", "memory": str(512 * 2**20)}
    assert container["resources"] == {"requests": quantities, "limits": quantities}
    env = env_of(container)
    assert json.loads(env["BOT_CONFIG"]) == job.bot_config()
    assert env["MEETING_URL"] == job.meetingUrl and env["BOT_NAME"] == "Notes Bot"
    assert env["JOB_ID"] == job.id and env["RECORDING_MODE"] == "gallery_view"


async def test_start_defaults_and_options(fake: KubeFake, make_backend: MakeBackend) -> None:
    backend = make_backend(ttl_seconds_after_finished=600, service_account="meeting-bot")
    await backend.start(make_job())

    (created,) = fake.jobs.values()
    assert fake.invalid == []
    spec = created["spec"]
    assert spec["activeDeadlineSeconds"] == 7200  # no maxRuntimeSeconds: 2 x expected run
    assert spec["ttlSecondsAfterFinished"] == 600
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "meeting-bot"
    assert "automountServiceAccountToken" not in pod
    quantities = {"cpu": "1000m", "memory": str(2 * 2**30)}  # SCHEDULER_DEFAULT_CPU / _MEMORY
    assert pod["containers"][0]["resources"]["limits"] == quantities


async def test_env_values_escape_variable_references(
    fake: KubeFake, backend: KubernetesBackend
) -> None:
    """Kubernetes expands $(VAR) in env values and reads $$ as $: every $ is doubled."""
    job = make_job(botName="Bot $(HOME) $$", config={"note": "$(SECRET)"})
    await backend.start(job)

    env = env_of(fake.jobs[job_name(job.id)]["spec"]["template"]["spec"]["containers"][0])
    assert env["BOT_NAME"] == "Bot $$(HOME) $$$$"
    assert json.loads(env["BOT_CONFIG"].replace("$$", "$"))["note"] == "$(SECRET)"


@pytest.mark.parametrize(
    "job_id",
    ["Upper_Case.ID", "x" * 80, "---", "tenant/job#1", "émoji-✓"],
)
async def test_odd_job_ids_still_name_a_valid_job(
    fake: KubeFake, backend: KubernetesBackend, job_id: str
) -> None:
    name = job_name(job_id)
    assert name == job_name(job_id) and name.startswith("botsched-") and len(name) <= 63
    assert job_name(job_id + "x") != name

    ref = await backend.start(make_job(id=job_id, tenant="tenant with spaces"))
    assert ref.id == name and fake.invalid == [] and name in fake.jobs
    labels = fake.jobs[name]["metadata"]["labels"]
    assert labels[LABEL_JOB] == label_value(job_id)
    assert fake.jobs[name]["metadata"]["annotations"][LABEL_JOB] == job_id  # exact


async def test_a_second_start_adopts_the_job(fake: KubeFake, backend: KubernetesBackend) -> None:
    job = make_job()
    first = await backend.start(job)
    fake.run(first.id)
    second = await backend.start(job)

    assert second == first
    assert fake.create_attempts == 2 and fake.creates[first.id] == 1  # 409 AlreadyExists
    assert (await backend.status(second)).phase == "running"


async def test_a_create_conflict_that_is_not_already_exists_fails(settings: Settings) -> None:
    def conflict(request: httpx.Request) -> httpx.Response:
        body = {"kind": "Status", "reason": "Conflict", "message": "namespace is terminating"}
        return httpx.Response(409, json=body)

    cluster = Cluster(server=SERVER, token=StaticToken(TOKEN))
    backend = KubernetesBackend(settings, cluster, transport=httpx.MockTransport(conflict))
    with pytest.raises(BackendError, match="namespace is terminating"):
        await backend.start(make_job())
    await backend.close()


def test_namespace_must_be_a_dns_label(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="K8S_NAMESPACE"):
        KubernetesBackend(settings, Cluster(server=SERVER), KubeOptions(namespace="../x"))


def test_namespace_falls_back_to_the_clusters_then_default(settings: Settings) -> None:
    in_ns = Cluster(server=SERVER, namespace="from-sa")
    assert KubernetesBackend(settings, in_ns, KubeOptions()).namespace == "from-sa"
    assert KubernetesBackend(settings, Cluster(server=SERVER), KubeOptions()).namespace == "default"
    chosen = KubeOptions(namespace="bots")
    assert KubernetesBackend(settings, in_ns, chosen).namespace == "bots"


# -- status ----------------------------------------------------------------------------------


async def test_status_follows_the_job(fake: KubeFake, backend: KubernetesBackend) -> None:
    ref = await backend.start(make_job())
    assert (await backend.status(ref)).phase == "pending"  # no pod yet

    fake.run(ref.id, ready=False)  # scheduled, pulling the image
    assert (await backend.status(ref)).phase == "pending"

    fake.run(ref.id)
    running = await backend.status(ref)
    assert running.phase == "running" and running.startedAt is not None

    fake.add_condition(ref.id, "SuccessCriteriaMet")  # not final: only Complete/Failed are
    fake.add_condition(ref.id, "Complete", "False")
    assert (await backend.status(ref)).phase == "running"

    fake.complete(ref.id)
    done = await backend.status(ref)
    assert (done.phase, done.exitCode, done.reason) == ("succeeded", 0, None)
    assert done.finishedAt is not None and done.startedAt is not None


async def test_status_of_a_failed_job(fake: KubeFake, backend: KubernetesBackend) -> None:
    ref = await backend.start(make_job())
    fake.run(ref.id)
    fake.fail(ref.id, "BackoffLimitExceeded", exit_code=3)

    failed = await backend.status(ref)
    assert (failed.phase, failed.exitCode) == ("failed", 3)
    assert failed.reason == (
        "BackoffLimitExceeded, exit code 3: Job has reached the specified backoff limit"
    )
    assert failed.finishedAt is not None


async def test_a_deadline_without_a_pod_has_no_exit_code(
    fake: KubeFake, backend: KubernetesBackend
) -> None:
    ref = await backend.start(make_job(maxRuntimeSeconds=60))
    message = "Job was active longer than specified deadline"
    fake.fail(ref.id, "DeadlineExceeded", exit_code=None, message=message)

    failed = await backend.status(ref)
    assert (failed.phase, failed.exitCode) == ("failed", None)
    assert failed.reason == f"DeadlineExceeded: {message}"


async def test_an_oom_kill_reads_in_the_reason(fake: KubeFake, backend: KubernetesBackend) -> None:
    ref = await backend.start(make_job())
    fake.run(ref.id)
    fake.fail(ref.id, exit_code=137, container_reason="OOMKilled", message="")

    failed = await backend.status(ref)
    assert failed.exitCode == 137
    assert failed.reason == (
        "BackoffLimitExceeded, exit code 137 (killed by SIGKILL), out of memory (OOM-killed)"
    )


async def test_an_unreadable_pod_leaves_the_exit_code_unknown(
    fake: KubeFake, backend: KubernetesBackend
) -> None:
    ref = await backend.start(make_job())
    fake.run(ref.id)
    fake.fail(ref.id, exit_code=2)
    fake.denied.add(("", "pods", "list"))

    failed = await backend.status(ref)
    assert (failed.phase, failed.exitCode) == ("failed", None)
    assert failed.reason is not None and failed.reason.startswith("BackoffLimitExceeded:")


async def test_an_unknown_job_is_lost(fake: KubeFake, backend: KubernetesBackend) -> None:
    for run_id in ("botsched-nothing-here", "Not/A Name"):
        with pytest.raises(ExecutionLost):
            await backend.status(ExecutionRef(backend="kubernetes", id=run_id))


# -- stop ------------------------------------------------------------------------------------


async def test_stop_deletes_the_job_in_the_background(
    fake: KubeFake, backend: KubernetesBackend
) -> None:
    ref = await backend.start(make_job())
    fake.run(ref.id)

    await backend.stop(ref)
    assert fake.deletions == [(ref.id, "Background")] and fake.invalid == []
    assert ref.id not in fake.jobs and fake.pods == {}  # the pod went with it
    with pytest.raises(ExecutionLost):
        await backend.status(ref)

    await backend.stop(ref)  # 404: stopping a run that is gone is fine
    assert fake.deletions[-1] == (ref.id, "Background")


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("permission", "operation"),
    [
        (("batch", "jobs", "create"), "start"),
        (("batch", "jobs", "get"), "status"),
        (("batch", "jobs", "delete"), "stop"),
        (("", "pods", "list"), "logs"),
        (("batch", "jobs", "list"), "runs"),
    ],
)
async def test_forbidden_names_the_missing_rbac_and_hides_the_token(
    fake: KubeFake,
    backend: KubernetesBackend,
    permission: tuple[str, str, str],
    operation: str,
) -> None:
    job = make_job()
    ref = await backend.start(job)
    fake.denied.add(permission)

    with pytest.raises(BackendError) as caught:
        if operation == "start":
            await backend.start(job)
        elif operation == "stop":
            await backend.stop(ref)
        elif operation == "runs":
            await backend.runs()
        else:
            await getattr(backend, operation)(ref)
    error = caught.value
    group, resource, verb = permission
    assert "RBAC" in error.message and "403" in error.message
    assert f"'{verb}' on '{resource}'" in error.message
    assert error.details == {"status": 403, "verb": verb, "resource": resource, "apiGroup": group}
    assert TOKEN not in f"{error} {error.message} {error.details!r} {error.__cause__!r}"


async def test_rejected_credentials_do_not_leak_the_token(
    fake: KubeFake, backend: KubernetesBackend
) -> None:
    fake.tokens = {"the-right-one"}
    with pytest.raises(BackendError) as caught:
        await backend.start(make_job())
    assert "401" in caught.value.message and "'create' on 'jobs'" in caught.value.message
    assert TOKEN not in f"{caught.value} {caught.value.details!r}"
    assert fake.auth_headers == [f"Bearer {TOKEN}"]  # a static token is not retried


async def test_network_errors_are_backend_errors(settings: Settings) -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    cluster = Cluster(server=SERVER, token=StaticToken(TOKEN))
    backend = KubernetesBackend(settings, cluster, transport=httpx.MockTransport(unreachable))
    ref = ExecutionRef(backend="kubernetes", id="botsched-a")
    for call in (backend.start(make_job()), backend.status(ref), backend.stop(ref)):
        with pytest.raises(BackendError, match="unreachable: ConnectError"):
            await call
    await backend.close()


# -- logs ------------------------------------------------------------------------------------


async def test_logs_come_from_the_newest_pod(fake: KubeFake, backend: KubernetesBackend) -> None:
    ref = await backend.start(make_job())
    fake.add_pod(ref.id, "Failed", "old pod\n", created="2025-03-01T12:00:00Z")
    fake.run(ref.id)  # a newer pod, running
    fake.add_pod("botsched-someone-else", "Running", "not ours\n")
    newest = max(
        (p for p in fake.pods.values() if p["metadata"]["labels"]["job-name"] == ref.id),
        key=lambda p: p["metadata"]["creationTimestamp"],
    )
    fake.pod_logs[newest["metadata"]["name"]] = "one\ntwo\nthree\n"

    assert await backend.logs(ref, tail=2) == "two\nthree\n"
    listed, read = fake.requests[-2], fake.requests[-1]
    assert listed.url.path == f"/api/v1/namespaces/{NAMESPACE}/pods"
    assert listed.query_params["labelSelector"] == f"job-name={ref.id}"
    assert read.url.path.endswith(f"/pods/{newest['metadata']['name']}/log")
    assert (read.query_params["tailLines"], read.query_params["container"]) == ("2", "bot")


async def test_logs_are_empty_until_the_bot_runs(
    fake: KubeFake, backend: KubernetesBackend
) -> None:
    ref = await backend.start(make_job())
    assert await backend.logs(ref) == ""  # no pod yet
    fake.run(ref.id, ready=False)
    assert await backend.logs(ref) == ""  # container waiting to start (HTTP 400)


async def test_logs_of_a_gone_job_are_lost(fake: KubeFake, backend: KubernetesBackend) -> None:
    ref = await backend.start(make_job())
    await backend.stop(ref)
    with pytest.raises(ExecutionLost):
        await backend.logs(ref)


# -- find and runs ---------------------------------------------------------------------------


async def test_find_returns_the_ref_start_gave(fake: KubeFake, backend: KubernetesBackend) -> None:
    """Contract fake: find GETs the Job named after the job, live or finished."""
    job, odd = make_job(), make_job(id="Tenant/Job#1")
    ref, odd_ref = await backend.start(job), await backend.start(odd)
    assert await backend.find(job.id) == ref
    assert await backend.find(odd.id) == odd_ref  # the folded name, as start gave it
    assert await backend.find("never-started") is None

    fake.run(ref.id)
    fake.complete(ref.id)
    assert await backend.find(job.id) == ref  # finished, not yet removed by its TTL
    await backend.stop(ref)
    assert await backend.find(job.id) is None
    assert fake.invalid == []


async def test_runs_lists_live_jobs_by_job_id(fake: KubeFake, backend: KubernetesBackend) -> None:
    """Contract fake: runs lists the scheduler's Jobs by label selector and keeps the live ones,
    keyed by the exact job id (the label value of an odd id is folded; the annotation is not)."""
    ids = ["pending", "running", "Tenant/Job#1", "completed", "failed", "stopped"]
    refs = {job_id: await backend.start(make_job(id=job_id)) for job_id in ids}
    fake.run(refs["running"].id)
    fake.run(refs["completed"].id)
    fake.complete(refs["completed"].id)
    fake.fail(refs["failed"].id)
    await backend.stop(refs["stopped"])
    fake.add_foreign_job("botsched-foreign", {LABEL_JOB: "foreign", MANAGED_BY: "someone-else"})
    fake.add_foreign_job("botsched-unlabelled", {MANAGED_BY: "bot-scheduler"})

    runs = await backend.runs()
    assert runs == {job_id: refs[job_id] for job_id in ("pending", "running", "Tenant/Job#1")}
    listed = fake.requests[-1]
    assert listed.url.path == f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
    selector = listed.query_params["labelSelector"]
    assert selector == f"{MANAGED_BY}=bot-scheduler,{LABEL_JOB}"
    assert fake.invalid == []


async def test_runs_reads_every_page(
    fake: KubeFake, backend: KubernetesBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("core.backends.kubernetes.PAGE_SIZE", 2)
    refs = {job_id: await backend.start(make_job(id=job_id)) for job_id in "abcde"}
    assert await backend.runs() == refs
    pages = [r.query_params.get("continue") for r in fake.requests if r.method == "GET"]
    assert pages == [None, "2", "4"] and fake.invalid == []


async def test_find_and_runs_raise_when_the_api_cannot_answer(
    fake: KubeFake, backend: KubernetesBackend, settings: Settings
) -> None:
    """An error is never "no run": find and runs raise BackendError (contract fake for the
    403s, an httpx MockTransport for the 500)."""
    ref = await backend.start(make_job())
    fake.denied.update({("batch", "jobs", "get"), ("batch", "jobs", "list")})
    with pytest.raises(BackendError, match="403"):
        await backend.find(make_job().id)
    with pytest.raises(BackendError, match="'list' on 'jobs'"):
        await backend.runs()

    def broken(request: httpx.Request) -> httpx.Response:
        body = {"kind": "Status", "reason": "InternalError", "message": "etcdserver: timeout"}
        return httpx.Response(500, json=body)

    cluster = Cluster(server=SERVER, token=StaticToken(TOKEN))
    failing = KubernetesBackend(settings, cluster, transport=httpx.MockTransport(broken))
    with pytest.raises(BackendError, match="etcdserver: timeout"):
        await failing.find(ref.id.removeprefix("botsched-"))
    with pytest.raises(BackendError, match="etcdserver: timeout"):
        await failing.runs()
    await failing.close()


# -- imports ---------------------------------------------------------------------------------


# -- failure classes (core/backends/policy.py) ------------------------------------------------

QUOTA = (
    'jobs.batch "botsched-x" is forbidden: exceeded quota: bots, requested: count/jobs.batch=1, '
    "used: count/jobs.batch=20, limited: count/jobs.batch=20"
)


@pytest.mark.parametrize(
    ("code", "reason", "message", "refused"),
    [
        (400, "BadRequest", "the body of the request was in an unknown format", True),
        (422, "Invalid", "Job.batch is invalid: spec.template.spec.containers[0].image", True),
        (404, "NotFound", 'namespaces "bots" not found', True),
        (403, "Forbidden", 'User "x" cannot create resource "jobs"', True),  # RBAC
        (403, "Forbidden", QUOTA, False),  # a ResourceQuota: it frees as Jobs end
        (409, "Conflict", "Operation cannot be fulfilled: the object has been modified", False),
        (429, "TooManyRequests", "the server has received too many requests", False),
        (500, "InternalError", "etcdserver: request timed out", False),
        (503, "ServiceUnavailable", "the server is currently unable to handle the request", False),
    ],
)
async def test_a_start_failure_is_permanent_or_transient_by_its_answer(
    settings: Settings, code: int, reason: str, message: str, refused: bool
) -> None:
    """An httpx MockTransport plays the API server's answer to the create (a meta/v1 Status)."""

    def answer(request: httpx.Request) -> httpx.Response:
        body = {"kind": "Status", "status": "Failure", "reason": reason, "message": message}
        return httpx.Response(code, json={**body, "code": code})

    cluster = Cluster(server=SERVER, token=StaticToken(TOKEN))
    backend = KubernetesBackend(settings, cluster, transport=httpx.MockTransport(answer))
    with pytest.raises(BackendError) as caught:
        await backend.start(make_job())
    await backend.close()
    assert isinstance(caught.value, StartRefused) is refused
    assert caught.value.details["status"] == code
    assert ("exceeded quota" in caught.value.message) == (message == QUOTA)


async def test_an_unreachable_api_server_is_transient(settings: Settings) -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    cluster = Cluster(server=SERVER, token=StaticToken(TOKEN))
    backend = KubernetesBackend(settings, cluster, transport=httpx.MockTransport(unreachable))
    with pytest.raises(BackendError) as caught:
        await backend.start(make_job())
    await backend.close()
    assert type(caught.value) is BackendError


async def test_rbac_that_forbids_creating_jobs_refuses_the_start(
    fake: KubeFake, backend: KubernetesBackend
) -> None:
    """The contract fake's RBAC answers 403 Forbidden: nothing will change it but an admin."""
    fake.denied.add(("batch", "jobs", "create"))
    with pytest.raises(StartRefused, match="RBAC forbids 'create' on 'jobs'"):
        await backend.start(make_job())
    assert fake.creates == {}


# -- through the scheduler -------------------------------------------------------------------


@pytest.fixture
def scheduler(backend: KubernetesBackend, settings: Settings) -> Scheduler:
    return Scheduler(MemoryStore(), backend, settings)


async def submit_and_dispatch(scheduler: Scheduler, fake: KubeFake) -> str:
    spec = JobSpec(meetingUrl="https://meet.example.com/abc", maxRuntimeSeconds=3600)
    job, _ = await scheduler.submit("acme", spec)
    report = await scheduler.drain_once()
    assert report.dispatched == 1
    running = await scheduler.get("acme", job.id)
    assert running.status is JobState.RUNNING and running.execution is not None
    assert running.execution.id == f"botsched-{job.id}" and running.execution.id in fake.jobs
    return job.id


async def test_scheduler_runs_a_job_to_completion(scheduler: Scheduler, fake: KubeFake) -> None:
    job_id = await submit_and_dispatch(scheduler, fake)
    name = f"botsched-{job_id}"
    fake.run(name)
    await scheduler.drain_once()
    assert (await scheduler.get("acme", job_id)).status is JobState.RUNNING

    fake.complete(name)
    report = await scheduler.drain_once()
    done = await scheduler.get("acme", job_id)
    assert report.completed == 1 and done.status is JobState.COMPLETED and done.exitCode == 0
    assert fake.creates[name] == 1 and fake.invalid == []


async def test_scheduler_records_a_failed_job(scheduler: Scheduler, fake: KubeFake) -> None:
    job_id = await submit_and_dispatch(scheduler, fake)
    name = f"botsched-{job_id}"
    fake.run(name)
    fake.fail(name, "BackoffLimitExceeded", exit_code=4)

    report = await scheduler.drain_once()
    failed = await scheduler.get("acme", job_id)
    assert report.failed == 1 and failed.status is JobState.FAILED and failed.exitCode == 4
    assert failed.reason is not None and failed.reason.startswith("BackoffLimitExceeded, exit")


async def test_scheduler_cancel_deletes_the_job(scheduler: Scheduler, fake: KubeFake) -> None:
    job_id = await submit_and_dispatch(scheduler, fake)
    name = f"botsched-{job_id}"
    fake.run(name)

    cancelled = await scheduler.cancel("acme", job_id)
    assert cancelled.status is JobState.CANCELLED
    assert fake.deletions == [(name, "Background")] and name not in fake.jobs


async def test_scheduler_fails_a_job_whose_start_rbac_forbids_at_once(
    scheduler: Scheduler, fake: KubeFake
) -> None:
    fake.denied.add(("batch", "jobs", "create"))
    job, _ = await scheduler.submit("acme", JobSpec(meetingUrl="https://meet.example.com/abc"))
    report = await scheduler.drain_once()
    failed = await scheduler.get("acme", job.id)
    assert (report.retried, failed.status, failed.attempts) == (0, JobState.FAILED, 1)
    assert failed.reason and failed.reason.startswith("start refused: Kubernetes RBAC forbids")
