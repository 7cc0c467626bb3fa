"""infra/gcp/deploy.sh, offline: what it would run, checked by the Google Cloud CLI itself.

`DRY_RUN=1` (a new project) and `DRY_RUN=existing` (everything exists) print every gcloud command
the script would run. Each is then given to `gcloud meta lint-gcloud-commands`, which loads that
command from the installed CLI and runs its own argument parser on the arguments: an unknown
command, an unknown or misspelt flag, a missing or malformed value, two flags that exclude each
other all fail there. It does not call Google: what only the API checks (a role that does not
exist, a region without the service, quotas) is not proven. A resource argument that gcloud only
reads when the command runs (a positional job name, say) is not checked either.

The script's real path runs too, against a stand-in `gcloud` that answers like a new project and
refuses the first grants as IAM does while a new service account propagates.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ci import unavailable

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "gcp" / "deploy.sh"
INDEXES = ROOT / "infra" / "gcp" / "firestore.indexes.json"
PROJECT = "demo-botsched"
SA = f"serviceAccount:botsched@{PROJECT}.iam.gserviceaccount.com"
BOT_SA = f"botsched-bot@{PROJECT}.iam.gserviceaccount.com"
BUILD_SA = f"botsched-build@{PROJECT}.iam.gserviceaccount.com"
ENV = {
    "PROJECT": PROJECT,
    "REGION": "europe-west1",
    "BOT_IMAGE": "europe-docker.pkg.dev/demo-botsched/bots/meet-teams-bot:1.2",
    "API_KEYS": "ck_live_4f9a2e8b7c1d:acme,ck_live_7b1c3d9e0f2a:globex",
}
Command = list[str]


def dry_run(mode: str) -> list[Command]:
    out = subprocess.run(
        ["bash", str(SCRIPT)], cwd=ROOT, env={**os.environ, **ENV, "DRY_RUN": mode},
        capture_output=True, text=True, timeout=60, check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return [shlex.split(line) for line in out.stderr.splitlines() if line.startswith("gcloud ")]


@pytest.fixture(scope="module")
def commands() -> list[Command]:
    return dry_run("1") + dry_run("existing")


def flag(command: Command, name: str) -> str | None:
    for i, arg in enumerate(command):
        if arg == name:
            return command[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def bindings(commands: list[Command]) -> Iterator[tuple[str, str, str]]:
    """(what the binding is on, member, role) of every add-iam-policy-binding."""
    for c in commands:
        if "add-iam-policy-binding" in c or "add-invoker-policy-binding" in c:
            verb = next(i for i, a in enumerate(c) if a.endswith("-policy-binding"))
            on = " ".join(c[1:verb]) + " " + c[verb + 1]
            role = flag(c, "--role") or "roles/run.invoker"
            yield on, flag(c, "--member") or "", role


def test_every_gcloud_call_of_the_script_is_printed(commands: list[Command]) -> None:
    """Each `g ...` in the script, up to its first flag or variable, starts a printed command."""
    calls = re.findall(r"\bg ((?:[a-z][a-z0-9-]*(?: |$))+)", SCRIPT.read_text(), re.M)
    printed = [" ".join(c[1:]) + " " for c in commands]
    missing = [call for call in calls if not any(p.startswith(call) for p in printed)]
    assert len(calls) >= 20 and missing == []


def test_every_command_parses_with_the_installed_gcloud(
    commands: list[Command], tmp_path: Path
) -> None:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        unavailable("gcloud is not installed (the Debian package google-cloud-cli)")
    wrong = ["gcloud", "run", "jobs", "create", "x", "--region", "r", "--max-retry", "0"]
    batch = [*commands, wrong]
    listed = tmp_path / "commands.json"
    listed.write_text(json.dumps([{"command_string": shlex.join(c)} for c in batch]))
    env = {
        **os.environ,
        "CLOUDSDK_CONFIG": str(tmp_path / "config"),  # no account, no credentials
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
        # what --project sets when a command runs: resource flags such as --topic read it
        "CLOUDSDK_CORE_PROJECT": PROJECT,
    }
    out = subprocess.run(
        [gcloud, "meta", "lint-gcloud-commands", f"--commands-file={listed}"],
        env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if out.returncode != 0 and "Invalid choice: 'lint-gcloud-commands'" in out.stderr:
        unavailable(f"this gcloud has no `meta lint-gcloud-commands`: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr
    results, _ = json.JSONDecoder().raw_decode(out.stdout)
    verdicts = {r["command_string"]: r for r in results}
    failed = {
        cmd: r["error_message"]
        for cmd, r in verdicts.items()
        if not r["success"] and "--max-retry" not in cmd
    }
    assert failed == {}
    assert len(verdicts) == len({shlex.join(c) for c in batch})  # each one was looked at
    (refused,) = [r for cmd, r in verdicts.items() if "--max-retry" in cmd]
    assert not refused["success"] and "--max-retry" in refused["error_message"]


def test_roles_are_bound_where_they_are_used(commands: list[Command]) -> None:
    found = set(bindings(commands))
    project = {(member, role) for on, member, role in found if on.startswith("projects ")}
    assert project == {
        (SA, "roles/datastore.user"),
        (SA, "roles/eventarc.eventReceiver"),
        (f"serviceAccount:{BUILD_SA}", "roles/cloudbuild.builds.builder"),
    }
    assert ("run jobs meeting-bot", SA, "roles/run.developer") in found
    assert (f"iam service-accounts {BOT_SA}", SA, "roles/iam.serviceAccountUser") in found
    assert ("secrets botsched-api-keys", SA, "roles/secretmanager.secretAccessor") in found
    assert ("functions botsched-drain", SA, "roles/run.invoker") in found
    assert not [b for b in found if BOT_SA in b[1]]  # the bots' account has no role at all


def test_the_bots_and_the_builds_run_as_their_own_accounts(commands: list[Command]) -> None:
    jobs = [c for c in commands if c[1:4] in (["run", "jobs", "create"], ["run", "jobs", "update"])]
    assert len(jobs) == 2 and all(flag(c, "--service-account") == BOT_SA for c in jobs)
    deploys = [c for c in commands if c[1:3] == ["functions", "deploy"]]
    assert len(deploys) == 4  # two functions, both modes
    for c in deploys:
        assert (
            flag(c, "--build-service-account") == f"projects/{PROJECT}/serviceAccounts/{BUILD_SA}"
        )
        assert flag(c, "--service-account") == SA.split(":", 1)[1]
    (enable, *_) = [c for c in commands if c[1:3] == ["services", "enable"]]
    assert {"iam.googleapis.com", "cloudbuild.googleapis.com"} <= set(enable)


def test_the_firestore_indexes_and_exemption_are_the_documented_ones(
    commands: list[Command],
) -> None:
    documented = json.loads(INDEXES.read_text())
    wanted = {
        tuple((f["fieldPath"], f["order"].lower()) for f in index["fields"])
        for index in documented["indexes"]
    }
    created = set()
    for c in commands:
        if c[1:5] == ["firestore", "indexes", "composite", "create"]:
            fields = [a for i, a in enumerate(c) if c[i - 1] == "--field-config"]
            created.add(tuple(tuple(p.split("=")[1] for p in f.split(",")) for f in fields))
    assert created == wanted
    overrides = {(o["collectionGroup"], o["fieldPath"]) for o in documented["fieldOverrides"]}
    assert all(o["indexes"] == [] for o in documented["fieldOverrides"])
    exempt = [c for c in commands if c[1:5] == ["firestore", "indexes", "fields", "update"]]
    assert all("--disable-indexes" in c for c in exempt)
    groups = {(c[c.index("--collection-group") + 1], c[5]) for c in exempt}
    assert groups == overrides


FAKE_GCLOUD = r"""#!/usr/bin/env bash
# Answers like a new project: nothing exists; a grant to a service account fails twice first.
echo "$*" >> "$LOG"
case "$*" in
  *" describe "*--format*) echo "https://botsched-api-x.a.run.app" ;;
  *" describe "*) echo "NOT_FOUND" >&2; exit 1 ;;
  *"--data-file=-"*) cat > "$SECRET" ;;
  *policy-binding*)
    key=$(printf %s "$*" | cksum | cut -d' ' -f1)
    tries=$(cat "$STATE/$key" 2>/dev/null || echo 0)
    echo $((tries + 1)) > "$STATE/$key"
    if [ "$tries" -lt 2 ]; then echo "Service account does not exist" >&2; exit 1; fi ;;
esac
"""


def test_the_real_path_retries_the_first_grants_and_finishes(tmp_path: Path) -> None:
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    fake = bin_dir / "gcloud"
    fake.write_text(FAKE_GCLOUD)
    fake.chmod(0o755)
    log, secret = tmp_path / "calls.log", tmp_path / "secret"
    env = {
        **os.environ, **ENV, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RETRY_DELAY": "0",
        "LOG": str(log), "SECRET": str(secret), "STATE": str(state),
    }  # fmt: skip
    out = subprocess.run(
        ["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "https://botsched-api-x.a.run.app/health" in out.stdout
    assert secret.read_text() == ENV["API_KEYS"]  # exactly the keys, no newline
    calls = log.read_text().splitlines()
    grants = [c for c in calls if "policy-binding" in c]
    assert len(grants) == 3 * len(set(grants))  # each refused twice, then granted
    assert "retrying" in out.stderr
    assert not [c for c in calls if "--quiet" not in c or f"--project {PROJECT}" not in c]


def test_the_bot_job_never_retries_a_task(commands: list[Command]) -> None:
    """Cloud Run cannot turn retries off per execution (RunJobRequest.Overrides holds only
    containerOverrides, taskCount and timeout): the job itself, created or updated, must."""
    jobs = [c for c in commands if c[1:4] in (["run", "jobs", "create"], ["run", "jobs", "update"])]
    assert len(jobs) == 2 and all(flag(c, "--max-retries") == "0" for c in jobs)
    (create,) = [c for c in jobs if c[3] == "create"]
    assert flag(create, "--tasks") == "1" and flag(create, "--task-timeout") == "4h"
