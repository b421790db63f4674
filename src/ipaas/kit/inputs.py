"""Request bodies refuse fields they do not know.

Pydantic drops an unknown field by default, and with it whatever the caller meant by it.
Found by hand, each answered ``201`` or ``200``: ``"activ": false`` created an *active*
workflow; a webhook trigger's misspelled ``"auht"`` took unsigned webhooks; a dry run's
``"mod": "simulate"`` sent its messages; a token's ``expires_in_days`` made a token that
never expires. A model of what a request sends derives from ``Input`` instead: an unknown
field is a ``422`` naming it (``extra_forbidden`` at its location), and nothing is done.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Input(BaseModel):
    """A request body, or a part of one: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")
