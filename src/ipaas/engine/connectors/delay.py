"""A delay step: the execution waits, then goes on with the next step (Zapier's Delay For
and Delay Until, n8n's Wait). It calls nothing.

The wait is durable, like a retry's: the execution goes back to the store as ``queued`` with
``next_attempt_at`` at the end of the wait, no worker slot is held meanwhile, and a restart
does not shorten or repeat it (the delay's own record is a completed step, never run
again). A cancel during the wait ends the execution at once. The wait does not count
against ``IPAAS_EXECUTION_TIMEOUT_S``: that bounds the time an execution runs.

A delay as the last step waits for nothing and ends the execution; in a dry run it does
not wait (its output still shows until when it would).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, Field, field_validator, model_validator

from ipaas.engine.connectors.base import Connector, Params, StepContext
from ipaas.kit.clock import utcnow

#: The longest wait: executions waiting this long are still in the store's queue (and in
#: its caps, ``IPAAS_QUEUE_MAX_DEPTH`` and a tenant's ``max_queued``).
MAX_DELAY_S = 30 * 24 * 3600.0


class DelayParams(Params):
    #: Wait this many seconds.
    seconds: float | None = Field(
        default=None,
        gt=0,
        le=MAX_DELAY_S,
        json_schema_extra={"description": "e.g. 3600, or {{ trigger.body.wait_s }}"},
    )
    #: Or wait until then (a past time does not wait).
    until: AwareDatetime | None = Field(
        default=None,
        json_schema_extra={"description": "ISO 8601 with a zone, e.g. 2026-12-24T09:00:00Z"},
    )

    @field_validator("seconds", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        # A template renders a form field or a query string's value as text: "30" is 30.
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                return value
        return value

    @model_validator(mode="after")
    def _one(self) -> DelayParams:
        if (self.seconds is None) == (self.until is None):
            msg = "give either seconds or until"
            raise ValueError(msg)
        return self


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


class Delay(Connector):
    type = "delay"
    Params = DelayParams
    credential_type = None
    calls_out = False
    loops = False

    async def run(self, ctx: StepContext, params: DelayParams) -> Any:
        now = utcnow()
        if params.until is not None:
            until = params.until.astimezone(now.tzinfo)
            if until - now > timedelta(seconds=MAX_DELAY_S):
                msg = f"until is more than {MAX_DELAY_S / 86400:.0f} days away: {_iso(until)}"
                raise ValueError(msg)
            until = max(until, now)
        else:
            assert params.seconds is not None  # the model requires one of the two
            until = now + timedelta(seconds=params.seconds)
        return {"until": _iso(until), "seconds": round((until - now).total_seconds(), 3)}

    def resumes_at(self, output: Any) -> datetime | None:
        if not isinstance(output, dict) or not isinstance(output.get("until"), str):
            return None
        return datetime.fromisoformat(output["until"])
