"""Step connectors, by step ``type``: an explicit registry, so ``grep`` finds every one."""

from __future__ import annotations

from ipaas.engine.connectors.base import Connector, ConnectorError, Endpoints, StepContext
from ipaas.engine.connectors.delay import Delay
from ipaas.engine.connectors.discord import DiscordMessage
from ipaas.engine.connectors.filter import Filter
from ipaas.engine.connectors.http_request import HttpRequest
from ipaas.engine.connectors.openweather import OpenWeather
from ipaas.engine.connectors.run_workflow import RunWorkflow
from ipaas.engine.connectors.slack import SlackMessage
from ipaas.engine.connectors.transform import Transform

REGISTRY: dict[str, Connector] = {
    "slack_message": SlackMessage(),
    "discord_message": DiscordMessage(),
    "openweather": OpenWeather(),
    "http_request": HttpRequest(),
    "filter": Filter(),
    "delay": Delay(),
    "transform": Transform(),
    "run_workflow": RunWorkflow(),
}


def get_connector(type: str) -> Connector | None:
    """The connector for a step ``type``, or ``None`` when there is none."""
    return REGISTRY.get(type)


__all__ = [
    "REGISTRY",
    "Connector",
    "ConnectorError",
    "Endpoints",
    "StepContext",
    "get_connector",
]
