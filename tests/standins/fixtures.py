"""Stand-in fixtures; ``tests/conftest.py`` imports them.

- ``standin``: one in-process server for the whole session;
- ``clean_standin``: the same server, reset (requests, counts, faults) before the test;
- ``http_client``: a real ``HttpClient`` that may reach 127.0.0.1, closed after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from ipaas.kit.egress import EgressPolicy
from ipaas.kit.http import HttpClient
from tests.standins.server import StandinServer


@pytest.fixture(scope="session")
def standin() -> Iterator[StandinServer]:
    with StandinServer() as server:
        yield server


@pytest.fixture
def clean_standin(standin: StandinServer) -> StandinServer:
    standin.reset()
    return standin


@pytest.fixture
async def http_client() -> AsyncIterator[HttpClient]:
    # The stand-ins listen on loopback, which the SSRF guard refuses unless allowed.
    client = HttpClient(timeout_s=10.0, egress=EgressPolicy.from_allow(["127.0.0.1/32"]))
    yield client
    await client.aclose()
