"""What every backend asks of its platform: no retries behind the scheduler's back, a timeout on
every run, and start failures sorted into the two classes the scheduler treats differently.

- No platform retries. A bot that failed must never rejoin a meeting on its own: the scheduler
  alone decides whether a start is retried. Kubernetes Jobs get `backoffLimit: 0`; Cloud Run and
  Container Apps cannot turn retries off per run, so their Job must (`--max-retries 0` in
  infra/gcp/deploy.sh, `replicaRetryLimit: 0` in infra/azure/main.bicep) and their backends refuse
  to start on a Job that retries.
- A timeout on every run: `maxRuntimeSeconds`, or without one RUN_TIMEOUT_FACTOR times
  `expected_run_seconds` (a platform's default, Cloud Run's 10 minutes, would cut a meeting short).
- Start failures: StartRefused (permanent: the job fails at once) when retrying cannot succeed:
  the platform answered 400, 403, 404 or 422 (an invalid request or image, a missing Job or
  namespace, a permission the scheduler lacks) unless its message names a quota, a rate limit or
  a precondition that passes with time; BackendError (transient: retried with backoff) for
  everything else: 5xx, 429, 401 (a token to refresh), 409, timeouts, connection errors.
"""

from __future__ import annotations

import math

from core.config import Settings
from core.errors import BackendError, StartRefused
from core.models import Job

PERMANENT_STATUSES = frozenset({400, 403, 404, 422})
# words of a 400/403 answer that passes with time (quota, throttling, a Job being updated):
# lowercase; gRPC's FAILED_PRECONDITION and ABORTED are what Google APIs answer mid-update
TRANSIENT_WORDS = (
    "quota",
    "exceeded",
    "exhausted",
    "throttl",
    "rate limit",
    "ratelimit",
    "too many",
    "failed_precondition",
    "aborted",
    "try again",
    "temporar",
)
RUN_TIMEOUT_FACTOR = 2  # a run without maxRuntimeSeconds: twice expected_run_seconds


def permanent(status: object, text: str = "") -> bool:
    """Whether a start answered with HTTP `status` and `text` can never succeed as it is."""
    if status not in PERMANENT_STATUSES:
        return False
    lowered = text.lower()
    return not any(word in lowered for word in TRANSIENT_WORDS)


def refusal(error: BackendError) -> StartRefused | None:
    """`error`, a failed start's, as StartRefused when it is permanent (its `status` detail and
    message say so); None when it is transient (or is a StartRefused already)."""
    if isinstance(error, StartRefused):
        return None
    if not permanent(error.details.get("status"), error.message):
        return None
    return StartRefused(error.message, **error.details)


def run_timeout_seconds(job: Job, settings: Settings) -> int:
    """How long the platform lets a run last before it kills it."""
    if job.maxRuntimeSeconds:
        return job.maxRuntimeSeconds
    return math.ceil(settings.expected_run_seconds * RUN_TIMEOUT_FACTOR)
