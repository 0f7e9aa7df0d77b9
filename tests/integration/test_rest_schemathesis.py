"""Property-based fuzzing of every operation in /openapi.json: no input gives a 5xx.

Runs against a stateful server preloaded with the small sample, so generated
requests also hit the referential checks and the optimizer.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from controlloop.config import load_system
from controlloop.server import create_app
from controlloop.server.testing import LiveServer
from tests.helpers.rest import EXAMPLES

pytestmark = pytest.mark.integration

# The schema is the app's own; the requests go over HTTP to a live server.
schema = schemathesis.openapi.from_dict(create_app(stateful=True).openapi())


@pytest.fixture(scope="module")
def live_url() -> Iterator[str]:
    app = create_app(stateful=True, system=load_system(EXAMPLES / "small"))
    with LiveServer(app) as srv:
        yield srv.url


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case: schemathesis.Case, live_url: str) -> None:
    case.call_and_validate(base_url=live_url, checks=[not_a_server_error])
