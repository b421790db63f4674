"""Local stand-ins for Slack, Discord, OpenWeather and a generic echo API, speaking the real
APIs' documented shapes over real HTTP (see ``app.py`` for the routes and controls)."""

from __future__ import annotations

from tests.standins.app import create_app
from tests.standins.server import StandinProcess, StandinServer
from tests.standins.state import Fault, StandinState

__all__ = ["Fault", "StandinProcess", "StandinServer", "StandinState", "create_app"]
