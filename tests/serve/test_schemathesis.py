"""Schemathesis against `genlab serve`'s OpenAPI schema: generated requests (valid and invalid bodies,
paths and parameters) to every operation never get a 500; every error is a 4xx.

Schemathesis' own pytest plugin does not work with this pytest, so each operation's hypothesis
strategy is driven here directly (API_EXAMPLES examples per operation)."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="the API fuzz needs schemathesis (the test extra)")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402

API_EXAMPLES = 40  # per operation


@pytest.fixture(scope="module")
def api(catalog):
    """(the operations of the schema, a client). The client is never entered, so the app's lifespan
    (which shuts its worker pool down at its end) never runs; schemathesis' own ASGI transport starts
    and stops it around calls, so the schema is read and the calls are made through this client."""
    from schemathesis.python import asgi

    from genlab.serve import create_app

    app = create_app(catalog, workers=1, queue=8)
    client = asgi.get_client(app)
    schema = schemathesis.openapi.from_dict(client.get("/api/openapi.json").json())
    yield [result.ok() for result in schema.get_all_operations()], client
    app.state.pool.shutdown()


def test_every_operation_is_fuzzed(api):
    labels = {operation.label for operation in api[0]}
    assert {"POST /api/runs/{name}/sample", "POST /api/runs/{name}/reconstruct"} <= labels, labels


@pytest.mark.slow
def test_no_server_errors(api):
    """Each operation: schema-valid requests (over a random run name and over real runs) and
    schema-invalid ones (negative mode)."""
    from schemathesis import GenerationMode

    operations, client = api
    statuses: dict[int, int] = {}
    for operation in operations:
        passes = [(GenerationMode.POSITIVE, {}), (GenerationMode.NEGATIVE, {})]
        if "{name}" in operation.path:
            passes += [(GenerationMode.POSITIVE, {"name": name}) for name in ("gan", "cvae", "dae")]
        for mode, path_parameters in passes:
            strategy = operation.as_strategy(mode, path_parameters=path_parameters or None)

            @given(case=strategy)
            @settings(
                max_examples=API_EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def call(case):
                response = case.call(base_url=client.base_url, session=client)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
                )

            try:
                call()
            except Unsatisfiable:  # negative mode: an operation without parameters has nothing to break
                assert mode == GenerationMode.NEGATIVE, operation.label
    assert statuses.get(200, 0) > 0 and any(400 <= code < 500 for code in statuses), statuses
