"""Fuzzing an app over HTTP against its own OpenAPI schema with schemathesis, for the API fuzz tests.

    statuses = schema_fuzz.fuzz(url, examples=120, prepare=...)   # every operation, valid and invalid data
    assert sum(statuses.values()) >= 500

Each operation of `url`'s `/openapi.json` gets Hypothesis-driven requests built from its schema,
schema-valid ones and (where it takes input) schema-invalid ones, and every response must pass
schemathesis's checks: no 5xx, a declared status code, content type and headers, a body valid
against the declared schema, invalid data refused with a 4xx. A failure is shrunk by Hypothesis
and raised with a `curl` line that reproduces it.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

# "Schema-valid data is accepted" cannot hold for these APIs: a schema cannot say that the last
# message must be a user's, or that a judgment needs one answer per question of this study. Such
# requests get a 400 naming the field, which the other checks still hold to the error schema.
EXCLUDED_CHECKS = [positive_data_acceptance]


def fuzz(url: str, examples: int, prepare: Callable[[Case], None] | None = None) -> collections.Counter:
    """Runs every operation of the app at `url` with up to `examples` generated requests per
    generation mode; `prepare` may edit each case before it is sent. The count of each
    (operation, status) sent."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    sent: collections.Counter = collections.Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        takes_input = any(len(part) for part in (operation.body, operation.query, operation.path_parameters))
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if takes_input else (GenerationMode.POSITIVE,):

            # No deadline: a shared CI core may stall any one request; no database: each run is fresh.
            @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
            @given(case=operation.as_strategy(mode))
            def check(case: Case) -> None:
                if prepare is not None:
                    prepare(case)
                response = case.call(base_url=url, timeout=60)
                sent[(operation.label, response.status_code)] += 1
                case.validate_response(response, excluded_checks=EXCLUDED_CHECKS)

            check()
    return sent


def assert_unlisted_methods_are_405_with_allow(url: str) -> None:
    """Every path of the schema answers a method it does not declare with 405, an `Allow` header
    naming the declared ones, and the error body (RFC 9110; schemathesis's CLI checks it too)."""
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    for path, methods in paths.items():
        concrete = path.replace("{index}", "0")
        declared = {method.upper() for method in methods}
        for method in {"DELETE", "PATCH", "PUT", "POST"} - declared:
            response = httpx.request(method, f"{url}{concrete}", params={"annotator": "fuzz"}, timeout=30)
            assert response.status_code == 405, (method, path, response.status_code)
            assert declared <= {m.strip() for m in response.headers["allow"].split(",")}, (path, response.headers)
            assert response.json()["error"]["type"] == "invalid_request_error"
