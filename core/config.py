"""Settings, parsed once from a mapping (the process environment, a Worker's bindings, ...).

Variable names are the seed's where it had one (`PORT`, `PLATFORM`, `SCHEDULER_*`); the seed's
short aliases (`MAX_JOBS`, `CONTAINER_IMAGE`) are accepted too.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.budget_policy import Policy, parse_budgets
from core.errors import ConfigError
from core.meeting_urls import MeetingPolicy, parse_allowed, policy
from core.platforms import backend_caps
from core.resources import cpu_nanos, memory_bytes

# variable name -> (field name, aliases)
_VARIABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "HOST": ("host", ()),
    "PORT": ("port", ()),
    "PLATFORM": ("platform", ()),
    "SCHEDULER_STORE": ("store", ()),
    "SCHEDULER_DATA_DIR": ("data_dir", ()),
    "SCHEDULER_SQLITE_PATH": ("sqlite_path", ()),
    "SCHEDULER_SQLITE_SYNCHRONOUS": ("sqlite_synchronous", ()),
    "DATABASE_URL": ("database_url", ()),
    "SCHEDULER_POSTGRES_POOL_SIZE": ("postgres_pool_size", ()),
    "SCHEDULER_POSTGRES_MIGRATE": ("postgres_migrate", ()),
    "SCHEDULER_MAX_CONCURRENT_JOBS": ("max_concurrent_jobs", ("MAX_JOBS",)),
    "SCHEDULER_MAX_CONCURRENT_PER_TENANT": ("max_concurrent_per_tenant", ()),
    "SCHEDULER_BACKEND_FAILURES": ("backend_failures", ()),
    "SCHEDULER_BACKEND_COOLDOWN_SECONDS": ("backend_cooldown_seconds", ()),
    "SCHEDULER_POLLING_INTERVAL": ("polling_interval_ms", ()),
    "SCHEDULER_CONTAINER_IMAGE": ("container_image", ("CONTAINER_IMAGE",)),
    "SCHEDULER_DEFAULT_CPU": ("default_cpu", ()),
    "SCHEDULER_DEFAULT_MEMORY": ("default_memory", ()),
    "SCHEDULER_MAX_ATTEMPTS": ("max_attempts", ()),
    "SCHEDULER_RETRY_BASE_SECONDS": ("retry_base_seconds", ()),
    "SCHEDULER_RETRY_MAX_SECONDS": ("retry_max_seconds", ()),
    "SCHEDULER_JOIN_LEAD_SECONDS": ("join_lead_seconds", ()),
    "SCHEDULER_JOIN_LEAD_MIN_SECONDS": ("join_lead_min_seconds", ()),
    "SCHEDULER_JOIN_LEAD_MAX_SECONDS": ("join_lead_max_seconds", ()),
    "SCHEDULER_JOIN_LEAD_MARGIN_SECONDS": ("join_lead_margin_seconds", ()),
    "SCHEDULER_LATE_TOLERANCE_SECONDS": ("late_tolerance_seconds", ()),
    "SCHEDULER_EXPECTED_RUN_SECONDS": ("expected_run_seconds", ()),
    "SCHEDULER_BUDGETS": ("budgets", ()),
    "SCHEDULER_OVERBOOKING": ("overbooking", ()),
    "SCHEDULER_MEETING_WINDOW_SECONDS": ("meeting_window_seconds", ()),
    "SCHEDULER_RESERVATION_BUCKET_SECONDS": ("reservation_bucket_seconds", ()),
    "SCHEDULER_CLAIM_TTL_SECONDS": ("claim_ttl_seconds", ()),
    "SCHEDULER_DISPATCH_LEASE_SECONDS": ("dispatch_lease_seconds", ()),
    "SCHEDULER_MAX_CLOCK_SKEW_SECONDS": ("max_clock_skew_seconds", ()),
    "SCHEDULER_DISPATCH_BATCH": ("dispatch_batch", ()),
    "SCHEDULER_MAX_BODY_BYTES": ("max_body_bytes", ()),
    "SCHEDULER_MAX_BATCH_SIZE": ("max_batch_size", ()),
    "SCHEDULER_BODY_TIMEOUT_SECONDS": ("body_timeout_seconds", ()),
    "SCHEDULER_ACCESS_LOG": ("access_log", ()),
    "SCHEDULER_API_KEYS": ("api_keys", ()),
    "SCHEDULER_ADMIN_KEYS": ("admin_keys", ()),
    "SCHEDULER_AUTH_DISABLED": ("auth_disabled", ()),
    "SCHEDULER_RATE_LIMIT_PER_SECOND": ("rate_limit_per_second", ()),
    "SCHEDULER_RATE_LIMIT_BURST": ("rate_limit_burst", ()),
    "SCHEDULER_ALLOWED_MEETING_HOSTS": ("allowed_meeting_hosts", ()),
    "SCHEDULER_MEETING_PLATFORMS_ONLY": ("meeting_platforms_only", ()),
    "SCHEDULER_WEBHOOK_ALLOW_PRIVATE": ("webhook_allow_private", ()),
    "SCHEDULER_WEBHOOK_RETRY_SCHEDULE": ("webhook_retry_schedule", ()),
    "SCHEDULER_WEBHOOK_TIMEOUT_SECONDS": ("webhook_timeout_seconds", ()),
    "SCHEDULER_WEBHOOK_DISABLE_AFTER_SECONDS": ("webhook_disable_after_seconds", ()),
    "SCHEDULER_WEBHOOK_CONCURRENCY": ("webhook_concurrency", ()),
    "SCHEDULER_WEBHOOK_SECRET_OVERLAP_SECONDS": ("webhook_secret_overlap_seconds", ()),
    "SCHEDULER_SECRETS_KEY": ("secrets_key", ()),
    "SCHEDULER_PUBLIC_URL": ("public_url", ()),
    "BOT_COMMAND": ("bot_command", ()),
    "BOT_STOP_GRACE_SECONDS": ("stop_grace_seconds", ()),
    "RECORDINGS_PATH": ("recordings_path", ()),
    "RECORDINGS_CONTAINER_PATH": ("recordings_container_path", ()),
    "CONTAINER_ENGINE": ("container_engine", ()),
    "AUTO_DETECT_ENGINE": ("auto_detect_engine", ()),
    "DOCKER_HOST": ("docker_host", ()),
    "AZURE_STORAGE_CONNECTION_STRING": ("azure_storage_connection_string", ()),
    "AZURE_STORAGE_ACCOUNT_URL": ("azure_storage_account_url", ()),
    "AZURE_TABLE_NAME": ("azure_table_name", ()),
    "AZURE_SUBSCRIPTION_ID": ("azure_subscription_id", ()),
    "AZURE_RESOURCE_GROUP": ("azure_resource_group", ()),
    "AZURE_JOB_NAME": ("azure_job_name", ()),
    "GCP_PROJECT_ID": ("gcp_project_id", ()),
    "GCP_REGION": ("gcp_region", ()),
    "GCP_JOB_NAME": ("gcp_job_name", ()),
    "FIRESTORE_DATABASE": ("firestore_database", ()),
    "FIRESTORE_COLLECTION": ("firestore_collection", ()),
    "FIRESTORE_EMULATOR_HOST": ("firestore_emulator_host", ()),
    "K8S_NAMESPACE": ("k8s_namespace", ()),
    "K8S_TTL_SECONDS_AFTER_FINISHED": ("k8s_ttl_seconds_after_finished", ()),
    "K8S_SERVICE_ACCOUNT": ("k8s_service_account", ()),
}

DEFAULT_TENANT = "default"
MIN_KEY_CHARS = 8
# requests per second per API key when the server is exposed and no rate is set
EXPOSED_RATE_LIMIT = 20.0
# Serverless packages are read-only: only /tmp takes the SQLite file and run data there. A
# serverless instance opens its store on a request: no migration runs there.
SERVERLESS_DEFAULTS = {"SCHEDULER_DATA_DIR": "/tmp/botsched", "SCHEDULER_POSTGRES_MIGRATE": "off"}


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    platform: str = "process"
    store: str = "sqlite"
    data_dir: Path = Path("data")
    sqlite_path: Path | None = None
    # `normal`: a commit survives the process being killed, not always a power cut; `full`:
    # every commit is synced to disk (core/stores/sqlite_connections.py)
    sqlite_synchronous: Literal["normal", "full"] = "normal"
    # the postgres store: a libpq URL (its password never shown), connections per process, and
    # whether opening the store applies missing migrations (`auto`) or only checks (`off`)
    database_url: str | None = Field(default=None, repr=False)
    postgres_pool_size: int = Field(default=10, ge=1, le=1000)
    postgres_migrate: Literal["auto", "off"] = "auto"
    max_concurrent_jobs: int = Field(default=10, ge=1)
    max_concurrent_per_tenant: int = Field(default=0, ge=0)
    # PLATFORM listing several backends (core/backends/spill.py): each one's own cap, read from
    # SCHEDULER_MAX_CONCURRENT_JOBS_<NAME> (core/platforms.py), and when a backend whose starts
    # keep failing is skipped (consecutive failures), for how long
    backend_caps: dict[str, int] = Field(default_factory=dict)
    backend_failures: int = Field(default=3, ge=1)
    backend_cooldown_seconds: float = Field(default=300.0, ge=0)
    polling_interval_ms: int = Field(default=5000, ge=50)
    container_image: str = "meet-teams-bot:latest"
    default_cpu: str = "1"
    default_memory: str = "2Gi"
    max_attempts: int = Field(default=3, ge=1)
    retry_base_seconds: float = Field(default=10.0, ge=0)
    retry_max_seconds: float = Field(default=600.0, ge=0)
    join_lead_seconds: float = Field(default=60.0, ge=0)
    # meeting-time scheduling: the lead learned per backend (p95 of claim -> running, plus the
    # margin) is kept within [min, max]; join_lead_seconds is the lead until one is measured
    join_lead_min_seconds: float = Field(default=10.0, ge=0)
    join_lead_max_seconds: float = Field(default=300.0, ge=0)
    join_lead_margin_seconds: float = Field(default=10.0, ge=0)
    # a scheduled job not started by joinAt plus this fails with reason `missed`
    late_tolerance_seconds: float = Field(default=120.0, ge=0)
    # a run's length when the job has no maxRuntimeSeconds and none has been measured yet
    expected_run_seconds: float = Field(default=3600.0, gt=0)
    # bot-minute budgets per tenant (`*`: every tenant not named): core/budgets.py
    budgets: dict[str, Policy] = Field(default_factory=dict)
    # a scheduled submit that would overbook its window: `reject` (409 with the earliest free
    # start) or `queue` (accepted, with a warning)
    overbooking: Literal["reject", "queue"] = "queue"
    # two jobs for one meeting starting less than this apart are the same meeting's
    meeting_window_seconds: float = Field(default=3600.0, gt=0)
    reservation_bucket_seconds: float = Field(default=900.0, ge=60)
    claim_ttl_seconds: float = Field(default=120.0, gt=0)
    dispatch_lease_seconds: float = Field(default=30.0, gt=0)
    # the most two instances' clocks may differ: a claim is recovered only this long after its
    # lease ran out, so a live dispatcher is never taken for a dead one
    max_clock_skew_seconds: float = Field(default=10.0, ge=0)
    dispatch_batch: int = Field(default=32, ge=1)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_batch_size: int = Field(default=100, ge=1)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    access_log: bool = False  # the local server logs one line per request
    api_keys: dict[str, str] = Field(default_factory=dict, repr=False)
    admin_keys: frozenset[str] = Field(default_factory=frozenset, repr=False)  # hashes
    auth_disabled: bool = False
    # None: EXPOSED_RATE_LIMIT when serving beyond loopback, off on loopback; 0: off
    rate_limit_per_second: float | None = Field(default=None, ge=0)
    rate_limit_burst: int = Field(default=100, ge=1)
    allowed_meeting_hosts: tuple[str, ...] = ()
    meeting_platforms_only: bool = False
    # webhooks (core/webhooks/): private targets and http to loopback for local use only; the
    # delays before each attempt (the first at once, then Recall's schedule, about a day)
    webhook_allow_private: bool = False
    webhook_retry_schedule: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    webhook_disable_after_seconds: float = Field(default=5 * 86400, gt=0)
    webhook_concurrency: int = Field(default=16, ge=1, le=256)
    webhook_secret_overlap_seconds: float = Field(default=86400, ge=0)
    # encrypts the signing secrets kept in the store (32 bytes, base64); unset: kept as they are
    secrets_key: str | None = Field(default=None, repr=False)
    # where bots reach this scheduler to report their status; unset: they report elsewhere or
    # not at all (`make run` sets it to its own address)
    public_url: str | None = None
    bot_command: str | None = None
    stop_grace_seconds: float = Field(default=10.0, ge=0)
    recordings_path: Path = Path("recordings")
    recordings_container_path: str = "/app/data"
    container_engine: Literal["podman", "docker"] | None = None
    auto_detect_engine: bool = True
    docker_host: str | None = None
    azure_storage_connection_string: str | None = Field(default=None, repr=False)
    azure_storage_account_url: str | None = Field(default=None, repr=False)  # may carry a SAS
    azure_table_name: str = Field(default="botschedjobs", pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$")
    # PLATFORM=azure: the Container Apps Job whose executions run the bots
    azure_subscription_id: str | None = None
    azure_resource_group: str | None = None
    azure_job_name: str | None = None
    # Google Cloud: None uses the project of the Application Default Credentials
    gcp_project_id: str | None = None
    gcp_region: str | None = None
    gcp_job_name: str | None = None
    firestore_database: str = "(default)"
    firestore_collection: str = "botsched_jobs"
    firestore_emulator_host: str | None = None
    # unset: the service account's or the kubeconfig context's namespace, else "default"
    k8s_namespace: str | None = None
    k8s_ttl_seconds_after_finished: int = Field(default=3600, ge=0)
    k8s_service_account: str | None = None

    @field_validator("sqlite_synchronous", "postgres_migrate", mode="before")
    @classmethod
    def _lowercase(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _schedule(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = tuple(item.strip() for item in value.split(",") if item.strip())
        if not value or any(float(delay) < 0 for delay in value):
            raise ValueError("a comma-separated list of seconds >= 0, one per attempt")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/") if value else value

    @field_validator("default_cpu")
    @classmethod
    def _cpu(cls, value: str) -> str:
        cpu_nanos(value)
        return value

    @field_validator("default_memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        memory_bytes(value)
        return value

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, defaults: Mapping[str, str] | None = None
    ) -> Settings:
        """Parse settings from `env` (default: os.environ); `defaults` fill variables that are
        unset or blank (a platform's own defaults). Unknown variables are ignored."""
        env = os.environ if env is None else env
        if defaults:
            env = {**defaults, **{name: value for name, value in env.items() if value.strip()}}
        values: dict[str, Any] = {}
        for variable, (field, aliases) in _VARIABLES.items():
            for name in (variable, *aliases):
                raw = env.get(name)
                if raw is not None and raw.strip() != "":
                    values[field] = raw.strip()
                    break
        if "api_keys" in values:
            values["api_keys"] = parse_api_keys(values["api_keys"])
        if "admin_keys" in values:
            values["admin_keys"] = parse_admin_keys(values["admin_keys"])
        values["backend_caps"] = backend_caps(env, values.get("platform", "process"))
        if "budgets" in values:
            values["budgets"] = parse_budgets(values["budgets"])
        if "allowed_meeting_hosts" in values:
            values["allowed_meeting_hosts"] = _allowed_hosts(values["allowed_meeting_hosts"])
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None

    @property
    def polling_interval(self) -> float:
        return self.polling_interval_ms / 1000

    @property
    def database_path(self) -> Path:
        return self.sqlite_path or self.data_dir / "scheduler.db"

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys) and not self.auth_disabled

    def tenant_for(self, api_key: str) -> str | None:
        """The tenant an API key belongs to, compared in constant time over the stored hashes."""
        return self.tenant_for_digest(hash_key(api_key))

    def tenant_for_digest(self, digest: str) -> str | None:
        """`tenant_for`, given the key's hash_key()."""
        return _find(self.api_keys.items(), digest)

    def is_admin(self, api_key: str) -> bool:
        """Whether the key is one of SCHEDULER_ADMIN_KEYS (constant time over the hashes)."""
        return self.is_admin_digest(hash_key(api_key))

    def is_admin_digest(self, digest: str) -> bool:
        return _find(((stored, "admin") for stored in self.admin_keys), digest) is not None

    def rate_limit(self, exposed: bool) -> float:
        """Requests per second per key; 0 is no limit."""
        if self.rate_limit_per_second is not None:
            return self.rate_limit_per_second
        return EXPOSED_RATE_LIMIT if exposed else 0.0

    @property
    def meeting_policy(self) -> MeetingPolicy:
        return policy(self.allowed_meeting_hosts, self.meeting_platforms_only)


def variable_names() -> list[str]:
    """Every variable Settings reads, aliases included."""
    return [name for variable, (_, aliases) in _VARIABLES.items() for name in (variable, *aliases)]


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def parse_api_keys(raw: str) -> dict[str, str]:
    """`key1:tenantA,key2:tenantB` (a key alone belongs to the default tenant) -> hash -> tenant.

    Only hashes are kept, so a settings dump or a crash report cannot leak a key.
    """
    keys: dict[str, str] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        key, _, tenant = item.partition(":")
        if len(key) < MIN_KEY_CHARS:
            raise ConfigError(
                f"SCHEDULER_API_KEYS: every key needs at least {MIN_KEY_CHARS} characters "
                "(e.g. `openssl rand -hex 24`)"
            )
        keys[hash_key(key)] = tenant.strip() or DEFAULT_TENANT
    return keys


def parse_admin_keys(raw: str) -> frozenset[str]:
    """`key1,key2` -> their hashes (at least MIN_KEY_CHARS characters each)."""
    keys = [item.strip() for item in raw.split(",") if item.strip()]
    if any(len(key) < MIN_KEY_CHARS for key in keys):
        raise ConfigError(
            f"SCHEDULER_ADMIN_KEYS: every key needs at least {MIN_KEY_CHARS} characters"
        )
    return frozenset(hash_key(key) for key in keys)


def _allowed_hosts(raw: str) -> tuple[str, ...]:
    try:
        return parse_allowed(raw)
    except ValueError as exc:
        raise ConfigError(f"SCHEDULER_ALLOWED_MEETING_HOSTS: {exc}") from None


def _find(stored: Iterable[tuple[str, str]], digest: str) -> str | None:
    """The value stored with `digest`, every stored hash compared (in constant time)."""
    found: str | None = None
    for stored_digest, value in stored:
        if hmac.compare_digest(stored_digest, digest):
            found = value
    return found


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _describe(exc: ValidationError) -> str:
    names = {field: variable for variable, (field, _) in _VARIABLES.items()}
    parts = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        parts.append(f"{names.get(field, field)}: {error['msg']}")
    return "invalid settings: " + "; ".join(parts)
