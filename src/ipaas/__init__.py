"""Simple iPaaS: webhooks in, Slack/Discord/OpenWeather/any HTTP API out."""

__version__ = "0.3.0.dev0"
