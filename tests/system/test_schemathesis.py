"""The live platform against its own OpenAPI schema, with Schemathesis: every operation of
``GET /v1/schema`` gets schema-valid and schema-invalid requests (its examples, the coverage
phase's boundary values and unexpected methods, then fuzzing), and a stateful phase chains
operations through the links the schema declares (create a queue, publish to it, pull, ack).

Every check runs: no 5xx, every status, content type, header and body as the schema says,
invalid data rejected (4xx), valid data accepted, unsupported methods 405 with ``Allow``,
missing or wrong keys refused. The tenant's resources exist before it starts and half of the
generated names are theirs, so requests reach Redis rather than stopping at a 404; known
edge values (64-bit stream ids, Unicode digits, crafted cursors, NUL) are mixed in.

Bounded and deterministic: a fixed seed, derandomized Hypothesis, a fixed number of examples
per operation and of stateful steps, and a time budget after which remaining examples are
skipped (a slow machine tests less, it does not fail). About 3,000 requests in 60-80 s.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.schemas import OpenApiSchema

from tests.factories import api_headers
from tests.system.conftest import ApiTenant, Platform

SEED = 20260601
EXAMPLES_PER_OPERATION = 25
STATEFUL_SCENARIOS = 15
STATEFUL_STEPS = 6
#: After this many seconds of the module, the remaining examples are skipped.
TIME_BUDGET_SECONDS = 110.0

#: The fuzz tenant's resources; a generated name is one of these half of the time. DELETE
#: operations get the doomed ones instead, so the others stay for the whole run.
NAMES = {"queue": ["jobs", "jobs-dlq"], "topic": ["events"], "subscription": ["audit"]}
DOOMED = {"queue": ["doomed-queue"], "topic": ["doomed-topic"], "subscription": ["doomed-sub"]}
#: Values at and beyond the edges of what the API accepts (Redis's 64-bit stream ids, ASCII
#: digits only, crafted cursors, NUL in a name), drawn for a third of the values of their
#: parameter: those the schema allows in valid cases, the others in invalid ones. Each of
#: the invalid ones once made the API answer 500, as did the largest valid offset.
EDGES: dict[str, list[str]] = {
    "query.after": [
        "0-0",
        "18446744073709551615-18446744073709551615",
        "18446744073709551616-0",
        "99999999999999999999-1",
        "\u0661-1",
        "1-\u0661",
        "1-1\n",
    ],
    "body.ack_ids[*]": [
        "0.0-0.1",
        "0.18446744073709551615-18446744073709551615.1",
        "63.1-1.1",
        "0.99999999999999999999-1.1",
        "0.1-18446744073709551616.1",
        "0.\u0661-1.1",
        "\u0660.1-1.1",
        "0.1-1.\u0661",
        "0.1-1.0",
    ],
    # base64 of [null], [1], {}, null and ["\u0000"]
    "query.cursor": ["W251bGxd", "WzFd", "e30", "bnVsbA", "WyJcdTAwMDAiXQ"],
}

#: Schema-valid requests the server rightly refuses with a 400 for what a schema cannot say:
#: a cursor it did not issue (cursors are opaque), a reference to a resource that does not
#: exist (dead_letter_queue, topic, redrive's ``to``), retry_backoff's min above its max, an
#: ack id or log partition beyond the resource's partition count. Elsewhere a 400 for
#: schema-valid data fails the run.
SEMANTIC_400 = [
    "GET /v1/queues",
    "GET /v1/topics",
    "GET /v1/subscriptions",
    "GET /v1/keys",
    "GET /v1/audit-events",
    "GET /v1/invoices",
    "GET /v1/usage",  # from must not be after to
    "POST /v1/keys",  # expires_at must be in the future
    "POST /v1/queues",
    "PATCH /v1/queues/{queue}",
    "POST /v1/queues/{queue}/redrive",
    "POST /v1/subscriptions",
    "PATCH /v1/subscriptions/{subscription}",
    "GET /v1/topics/{topic}/messages",
    "POST /v1/queues/{queue}/ack",
    "POST /v1/queues/{queue}/nack",
    "POST /v1/queues/{queue}/modify-deadline",
    "POST /v1/subscriptions/{subscription}/ack",
    "POST /v1/subscriptions/{subscription}/nack",
    "POST /v1/subscriptions/{subscription}/modify-deadline",
]
#: Schema-valid requests refused with a 400 because the schema of another part of the API does
#: not yet state a limit its view enforces; each to be removed with its fix. Every other check
#: still applies to these operations.
NOT_YET_STATED: dict[str, str] = {}
ACCEPTED = ["2xx", "401", "403", "404", "409", "429"]


class Budget:
    """The module's clock (started by the fuzz tenant's set-up) and what was sent."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.sent: Counter[tuple[str, int]] = Counter()  # (phase, status class) -> requests

    def start(self) -> None:
        self.started = time.monotonic()

    def count(self, phase: str, response: Any) -> None:
        self.sent[phase, response.status_code // 100] += 1

    def spent(self) -> bool:
        return time.monotonic() - self.started > TIME_BUDGET_SECONDS

    def summary(self) -> str:
        phases = sorted({phase for phase, _ in self.sent})
        parts = [
            f"{phase}: {sum(n for (p, _), n in self.sent.items() if p == phase)} requests ("
            + ", ".join(f"{n} {c}xx" for (p, c), n in sorted(self.sent.items()) if p == phase)
            + ")"
            for phase in phases
        ]
        return f"schemathesis in {time.monotonic() - self.started:.0f} s: " + "; ".join(parts)


BUDGET = Budget()


@pytest.fixture(scope="module", autouse=True)
def _no_address_lockout() -> Iterator[None]:
    """The platform of this module counts no failed authentications per address: the auth
    checks send requests with no key and with wrong keys, and expect the 401 of each, not
    the 429 that a real client sending that many bad keys gets. (Autouse, so it is set up
    before the platform starts and reads the environment.)"""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTH_FAILURES_PER_SECOND", "0")
        patch.setenv("AUTH_FAILURES_PER_MINUTE", "0")
        yield


def ok(response: Any, status: int) -> Any:
    assert response.status_code == status, (response.status_code, response.text)
    return response.json()


@pytest.fixture(scope="module")
def fuzz_tenant(platform: Platform) -> ApiTenant:
    """A tenant with a dead-letter queue, a queue using it, a 64-partition topic (so any ack
    id partition the schema allows exists) with a subscription, and messages in all of them."""
    BUDGET.start()
    tenant = platform.tenant("Fuzz")
    http = tenant.http
    ok(http.post("/v1/queues", json={"name": "jobs-dlq"}), 201)
    queue = {"name": "jobs", "dead_letter_queue": "jobs-dlq", "max_delivery_attempts": 2}
    ok(http.post("/v1/queues", json=queue), 201)
    ok(http.post("/v1/topics", json={"name": "events", "partitions": 64}), 201)
    ok(http.post("/v1/subscriptions", json={"name": "audit", "topic": "events"}), 201)
    ok(http.post("/v1/queues", json={"name": "doomed-queue"}), 201)
    ok(http.post("/v1/topics", json={"name": "doomed-topic"}), 201)
    ok(http.post("/v1/subscriptions", json={"name": "doomed-sub", "topic": "events"}), 201)
    batch = {"messages": [{"body": {"n": n}, "attributes": {"k": str(n)}} for n in range(20)]}
    for path in ("queues/jobs", "queues/jobs-dlq", "topics/events"):
        ok(http.post(f"/v1/{path}/messages", json=batch), 201)
    ok(http.post("/v1/queues/jobs/pull", json={"max_messages": 5}), 200)
    return tenant


def edge_name(key: str) -> str:
    return "edges-" + "".join(c if c.isalnum() else "-" for c in key)


def names_of(dictionaries: str) -> dict[str, Any]:
    edges = {key: {"dictionary": edge_name(key), "probability": 0.3} for key in EDGES}
    return edges | {
        f"path.{kind}": {"dictionary": f"{dictionaries}-{kind}", "probability": 0.5}
        for kind in NAMES
    }


def schemathesis_config(tenant: ApiTenant) -> SchemathesisConfig:
    nul = ["\x00", "jobs\x00"]
    dictionaries = {f"live-{kind}": {"values": [*names, *nul]} for kind, names in NAMES.items()}
    dictionaries |= {f"doomed-{kind}": {"values": names} for kind, names in DOOMED.items()}
    dictionaries |= {edge_name(key): {"values": values} for key, values in EDGES.items()}
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "headers": api_headers(tenant.key),
            "generation": {"max-examples": EXAMPLES_PER_OPERATION, "deterministic": True},
            "dictionaries": dictionaries,
            "parameters": names_of("live"),
            "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}},
            "phases": {"stateful": {"max-steps": STATEFUL_STEPS}},
            "operations": [
                {"include-method": "DELETE", "parameters": names_of("doomed")},
                {
                    "include-name": [*SEMANTIC_400, *NOT_YET_STATED],
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "400"]}
                    },
                },
            ],
            "request-timeout": 30,
        }
    )


@pytest.fixture(scope="module")
def api_schema(platform: Platform, fuzz_tenant: ApiTenant) -> OpenApiSchema:
    return schemathesis.openapi.from_url(
        f"{platform.url}/v1/schema?format=json", config=schemathesis_config(fuzz_tenant)
    )


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """Schemathesis 4.32's lazy schema renames the test node through ``Node._nodeid``, an
    attribute pytest 9 no longer has (its node ids are ``_id`` now); without one to read it
    fails before the first request. Only its reporting uses it."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


def spare_own_key(case: Any, tenant: ApiTenant) -> None:
    """The run's key must survive it: a revocation of it becomes one of a key nobody has."""
    if case.operation.label == "DELETE /v1/keys/{key_id}" and (
        case.path_parameters.get("key_id") == tenant.key_id
    ):
        case.path_parameters["key_id"] = str(uuid.UUID(int=SEED))


def tame(case: Any) -> None:
    """Keep a generated request quick and within what the schema can say.

    A long poll waits at most a second (the schema allows 20; one of those per example
    would be the whole time budget). And while the schema is OpenAPI 3.0, which has no
    ``propertyNames``, a schema-valid message may carry attribute names the API refuses
    (empty, over 128 characters, starting ``op-``, holding NUL; all stated in words only):
    valid cases lose those, so a 400 for them does not count as a refused valid request."""
    body = case.body if isinstance(case.body, dict) else None
    if body is None:
        return
    wait = body.get("wait_seconds")
    if case.operation.path.endswith("/pull") and isinstance(wait, int) and 1 < wait <= 20:
        body["wait_seconds"] = 1
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    openapi_30 = case.operation.schema.raw_schema["openapi"].startswith("3.0")
    if positive and openapi_30 and case.operation.path.endswith("/messages"):
        for message in body.get("messages", [body]):
            attributes = message.get("attributes") if isinstance(message, dict) else None
            if isinstance(attributes, dict):
                refused = [
                    name
                    for name in attributes
                    if not 1 <= len(name) <= 128 or name[:3] == "op-" or "\0" in name
                ]
                for name in refused:
                    del attributes[name]


@schema.parametrize()
@hypothesis.settings(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_every_operation_keeps_the_schema(case: Any, fuzz_tenant: ApiTenant) -> None:
    """Examples, boundary values and fuzzed requests of each operation: all checks pass."""
    if BUDGET.spent():
        return
    spare_own_key(case, fuzz_tenant)
    tame(case)
    BUDGET.count("stateless", case.call_and_validate())


def test_stateful_sequences_keep_the_schema(
    api_schema: OpenApiSchema, fuzz_tenant: ApiTenant
) -> None:
    """Chains of linked operations (a created resource used by the next calls): all checks."""
    base = api_schema.as_state_machine()

    class Machine(base):  # type: ignore[valid-type, misc]
        def before_call(self, case: Any) -> None:
            spare_own_key(case, fuzz_tenant)
            tame(case)

        def step(self, input: Any) -> Any:
            if BUDGET.spent():
                return None
            return super().step(input)

        def after_call(self, response: Any, case: Any) -> None:
            BUDGET.count("stateful", response)

    Machine.run(
        settings=hypothesis.settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
    )


def test_the_fuzz_key_survived(fuzz_tenant: ApiTenant) -> None:
    """The run's key was never revoked, so every check saw authenticated answers."""
    assert fuzz_tenant.http.get("/v1/tenant").status_code == 200
    print(BUDGET.summary())
