"""Schemathesis over the live OpenAPI document (fetched from the app): every operation, up to 30
generated requests each (positive and negative, plus schemathesis' coverage cases: other methods,
missing headers, boundaries), every built-in check: no 5xx, documented status codes, content
types, headers and response schemas, schema-violating requests refused, auth enforced, 405 with
Allow.

One check is adapted: a schema-valid request may be refused with a 400 that names a field the
request sent. The server checks what no JSON Schema can say, on purpose: a meeting host the
operator's policy refuses (internal addresses), resource and date bounds, a deadline already
past, NUL characters, a list cursor the API did not make. Any other refusal still fails.

The app runs in-process (the ASGI transport) over the memory store and the fake backend, with API
keys on. A failure names the operation (`[POST /api/scheduler/jobs]`), the check, and a curl
command that reproduces it.
"""

from __future__ import annotations

from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.checks import CHECKS, load_all_checks  # noqa: E402

from core.api import create_app  # noqa: E402
from core.config import Settings  # noqa: E402
from core.runtime import Runtime  # noqa: E402
from core.scheduler import Scheduler  # noqa: E402
from core.stores.cursor import encode_cursor  # noqa: E402
from core.stores.memory import MemoryStore  # noqa: E402
from tests.api.conftest import API_KEYS, KEY_A  # noqa: E402
from tests.fakes import FakeBackend  # noqa: E402

load_all_checks()  # the OpenAPI checks register themselves on import
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

AUTH = {"X-API-Key": KEY_A}
SETTINGS = Settings.from_env({"SCHEDULER_STORE": "memory", "SCHEDULER_API_KEYS": API_KEYS})
APP = create_app(
    SETTINGS,
    Runtime(SETTINGS, Scheduler(MemoryStore(), FakeBackend(), SETTINGS)),
    exposed=False,
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
# a schema-violating request is refused with 413 too, when it is larger than the body limit
rejection = schema.config.checks.negative_data_rejection
rejection.expected_statuses = [*rejection.expected_statuses, "413"]


def names_sent(case: schemathesis.Case) -> set[str]:
    """The parameters and body fields a request sent (a batch's items' fields too)."""
    names = {*(case.query or {}), *(case.headers or {}), *(case.path_parameters or {})}
    body = case.body if isinstance(case.body, dict) else {}
    names.update(body)
    for item in body.get("jobs", []) if isinstance(body.get("jobs"), list) else []:
        names.update(item if isinstance(item, dict) else ())
    return names


def positive_data_accepted_or_refused_with_reason(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """positive_data_acceptance, except for a 400 whose message names a field the request sent
    (a rule beyond the schema: see the module's docstring)."""
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if positive and response.status_code == 400:
        body = response.json()
        message, fields = str(body.get("message", "")), body.get("fields") or []
        sent = names_sent(case)
        named = any(name and name in message for name in sent)
        if not named and not any(field in sent for field in fields):
            raise AssertionError(
                f"a schema-valid request was refused without naming what it sent: {message!r}"
            )
        return None
    return positive_data_acceptance(ctx, response, case)


CHECK_FUNCTIONS = [
    check
    for check in CHECKS.get_all()
    if not isinstance(check, type) and check is not positive_data_acceptance
]
ALL_CHECKS = [*CHECK_FUNCTIONS, positive_data_accepted_or_refused_with_reason]


@schema.hook
def flatmap_query(context: schemathesis.HookContext, query: dict[str, Any] | None) -> Any:
    """A list cursor is opaque: only one the API made is valid, which no schema can say. Every
    generated cursor becomes one the API could have made, from any time and any job id."""
    if not query or "cursor" not in query:
        return st.just(query)
    ids = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=128)
    cursors = st.builds(encode_cursor, st.integers(-(10**20), 10**20), ids)
    return cursors.map(lambda cursor: {**query, "cursor": cursor})


def test_every_check_runs() -> None:
    names = {check.__name__ for check in ALL_CHECKS}
    assert {"not_a_server_error", "response_schema_conformance", "status_code_conformance"} < names
    assert {"negative_data_rejection", "unsupported_method", "ignored_auth"} < names
    assert positive_data_acceptance not in ALL_CHECKS  # replaced by the adapted one above
    assert len(list(schema.get_all_operations())) == 28


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,  # the same requests every run: a failure is a change, and reproducible
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_keeps_its_published_contract(case: schemathesis.Case) -> None:
    case.call_and_validate(headers=AUTH, checks=ALL_CHECKS)
