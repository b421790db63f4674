"""What a stand-in saw: every request, delivered messages, injected faults, slow calls.

Handlers run on the server's event loop thread while tests read from theirs, so every
mutation and every snapshot holds one lock.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass
from typing import Any

#: Requests kept for ``GET /_standin/requests``; counters in ``stats()`` are never cut.
DEFAULT_MAX_REQUESTS = 100_000
#: Lifetime of the OAuth 2.0 stand-in's access tokens, unless a test sets another.
OAUTH_EXPIRES_IN_S = 3600


@dataclass(slots=True)
class Fault:
    """Answer the next ``count`` requests under ``path_prefix`` with ``status`` (after
    ``delay_s``); ``status=None`` only delays; ``count=None`` lasts until reset."""

    path_prefix: str = "/"
    status: int | None = None
    count: int | None = 1
    retry_after: float | None = None
    delay_s: float = 0.0


def parse_body(body: bytes) -> Any:
    """A recorded body: the JSON value when it is JSON, else the text."""
    if not body:
        return None
    text = body.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


class StandinState:
    def __init__(self, *, max_requests: int = DEFAULT_MAX_REQUESTS) -> None:
        self._lock = threading.Lock()
        self._requests: deque[dict[str, Any]] = deque(maxlen=max_requests)
        self._seq = 0
        self._by_kind: Counter[str] = Counter()
        self._by_status: Counter[int] = Counter()
        #: Delivered message texts per service (``slack``, ``discord``).
        self._delivered: dict[str, Counter[str]] = {}
        self._faults: list[Fault] = []
        self._slow_calls: dict[str, dict[str, Any]] = {}
        #: Requests being handled (not yet answered): ticket -> monotonic start.
        self._in_flight: dict[int, float] = {}
        #: The most requests handled at once since the last reset.
        self._in_flight_max = 0
        self._tickets = 0
        #: Set when the server stops, so slow handlers finish instead of holding it open.
        self.closing = threading.Event()
        #: Access tokens the OAuth 2.0 token endpoint gave and has not revoked.
        self._oauth_tokens: set[str] = set()
        #: ``expires_in`` of the tokens it gives (``None``: left out of the answer).
        self._oauth_expires_in: float | str | None = OAUTH_EXPIRES_IN_S
        #: What the token endpoint answers instead of a token (a broken endpoint), if set.
        self.oauth_answer: Any = None
        #: The authorization code grant's (``standins.oauth``): codes given and what they
        #: were given for; live refresh tokens and their family; used ones (a reuse
        #: revokes the family, as Auth0's and Okta's rotation does); revoked families.
        self.oauth_codes: dict[str, dict[str, str]] = {}
        self.oauth_refresh: dict[str, str] = {}
        self.oauth_used_refresh: dict[str, str] = {}
        self.oauth_revoked_families: set[str] = set()
        #: Whether each renewal gives a new refresh token (and ends the old one).
        self.oauth_rotate = True
        #: What the consent page answers instead of a code (``access_denied``), if set.
        self.oauth_deny: str | None = None

    def record(
        self,
        *,
        kind: str,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        status: int,
        received_at: float,
        received_monotonic: float,
    ) -> None:
        entry = {
            "kind": kind,
            "method": method,
            "path": path,
            "query": query,
            "headers": headers,
            # Parsed when read: recording stays cheap under benchmark load.
            "body": body,
            "status": status,
            "received_at": received_at,
            "received_monotonic": received_monotonic,
        }
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            self._requests.append(entry)
            self._by_kind[kind] += 1
            self._by_status[status] += 1

    def begin(self) -> int:
        """A request arrived; ``end(ticket)`` when it is answered. ``stats()`` reports how many
        are being handled and how long ago the youngest arrived."""
        with self._lock:
            self._tickets += 1
            self._in_flight[self._tickets] = time.monotonic()
            self._in_flight_max = max(self._in_flight_max, len(self._in_flight))
            return self._tickets

    def end(self, ticket: int) -> None:
        with self._lock:
            self._in_flight.pop(ticket, None)

    def deliver(self, service: str, text: str) -> None:
        """Count one message the stand-in accepted, keyed by its text to spot duplicates."""
        with self._lock:
            self._delivered.setdefault(service, Counter())[text] += 1

    def requests(
        self, *, kind: str | None = None, path_prefix: str | None = None
    ) -> list[dict[str, Any]]:
        with self._lock:
            entries = list(self._requests)
        return [
            {**e, "body": parse_body(e["body"])}
            for e in entries
            if (kind is None or e["kind"] == kind)
            and (path_prefix is None or e["path"].startswith(path_prefix))
        ]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            stats: dict[str, Any] = {
                "requests": sum(self._by_kind.values()),
                "by_kind": dict(self._by_kind),
                "by_status": {str(k): v for k, v in sorted(self._by_status.items())},
                "messages": 0,
                "duplicate_texts": 0,
                "in_flight": len(self._in_flight),
                "in_flight_max": self._in_flight_max,
                # Seconds since the youngest unanswered request arrived (None: none).
                "in_flight_youngest_s": (
                    time.monotonic() - max(self._in_flight.values()) if self._in_flight else None
                ),
            }
            for service in ("slack", "discord"):
                texts = self._delivered.get(service, Counter())
                total = sum(texts.values())
                duplicates = total - len(texts)
                stats[f"{service}_messages"] = total
                stats[f"{service}_distinct_texts"] = len(texts)
                stats[f"{service}_duplicate_texts"] = duplicates
                # The most repeated texts, to show what a durability test delivered twice.
                stats[f"{service}_duplicates"] = {
                    text: n for text, n in texts.most_common(20) if n > 1
                }
                stats["messages"] += total
                stats["duplicate_texts"] += duplicates
        return stats

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._by_kind.clear()
            self._by_status.clear()
            self._delivered.clear()
            self._faults.clear()
            self._slow_calls.clear()
            self._in_flight_max = len(self._in_flight)
            self._oauth_tokens.clear()
            self._oauth_expires_in = OAUTH_EXPIRES_IN_S
            self.oauth_answer = None
            self.oauth_codes.clear()
            self.oauth_refresh.clear()
            self.oauth_used_refresh.clear()
            self.oauth_revoked_families.clear()
            self.oauth_rotate = True
            self.oauth_deny = None

    def oauth_issue(self, value: str) -> float | str | None:
        """Record ``value`` as a live token; its ``expires_in``."""
        with self._lock:
            self._oauth_tokens.add(value)
            return self._oauth_expires_in

    def oauth_code(self, redirect_uri: str, challenge: str, scope: str) -> str:
        """A new authorization code, for one exchange with the same ``redirect_uri`` and
        the verifier of ``challenge``."""
        code = f"code-{uuid.uuid4().hex}"
        with self._lock:
            self.oauth_codes[code] = {
                "redirect_uri": redirect_uri,
                "challenge": challenge,
                "scope": scope,
            }
        return code

    def oauth_redeem(self, code: str, redirect_uri: str, verifier: str) -> tuple[str, str] | None:
        """A new refresh token (a new family) for ``code`` and the scope consented to, or
        ``None``: unknown, used, another redirect URI or a verifier that does not match
        (RFC 7636, 4.6)."""
        with self._lock:
            given = self.oauth_codes.pop(code, None)
            if given is None or given["redirect_uri"] != redirect_uri:
                return None
            digest = hashlib.sha256(verifier.encode()).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != given["challenge"]:
                return None
            refresh = f"rt-{uuid.uuid4().hex}"
            self.oauth_refresh[refresh] = uuid.uuid4().hex
            return refresh, given["scope"]

    def oauth_renew(self, refresh: str) -> tuple[str | None, str]:
        """The refresh token to give back for ``refresh`` (``None``: none, not rotated), or
        the error: ``refresh`` used once already revokes its family."""
        with self._lock:
            family = self.oauth_used_refresh.get(refresh)
            if family is not None:
                self.oauth_revoked_families.add(family)
                return None, "refresh token reused: every token of its grant is revoked"
            family = self.oauth_refresh.get(refresh)
            if family is None or family in self.oauth_revoked_families:
                return None, "unknown or revoked refresh token"
            if not self.oauth_rotate:
                return None, ""
            del self.oauth_refresh[refresh]
            self.oauth_used_refresh[refresh] = family
            new = f"rt-{uuid.uuid4().hex}"
            self.oauth_refresh[new] = family
            return new, ""

    def oauth_live(self, value: str) -> bool:
        with self._lock:
            return value in self._oauth_tokens

    def oauth_configure(self, spec: dict[str, Any]) -> None:
        """``revoke``: every token given so far; ``expires_in``: of the next ones;
        ``answer``: what to answer instead of a token (``null``: tokens again)."""
        with self._lock:
            if spec.get("revoke"):
                self._oauth_tokens.clear()
            if "expires_in" in spec:
                self._oauth_expires_in = spec["expires_in"]
            if "answer" in spec:
                self.oauth_answer = spec["answer"]
            if "rotate" in spec:
                self.oauth_rotate = bool(spec["rotate"])
            if "deny" in spec:
                self.oauth_deny = spec["deny"]
            if spec.get("revoke_refresh"):
                self.oauth_revoked_families.update(self.oauth_refresh.values())

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """The remote recovers: requests keep being recorded."""
        with self._lock:
            self._faults.clear()

    def faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(f) for f in self._faults]

    def take_fault(self, path: str) -> Fault | None:
        """The first fault matching ``path``, using up one of its ``count``."""
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault.path_prefix):
                    if fault.count is not None:
                        fault.count -= 1
                        if fault.count <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def slow_event(self, call_id: str, event: str, **fields: Any) -> None:
        """Record when a ``/slow`` call started, saw its client go, or completed."""
        with self._lock:
            call = self._slow_calls.setdefault(call_id, {"id": call_id, "outcome": "running"})
            call[f"{event}_at"] = time.time()
            call[f"{event}_monotonic"] = time.monotonic()
            call.update(fields)
            if event != "started":
                call["outcome"] = event

    def slow_calls(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self._slow_calls.values()]

    def slow_call(self, call_id: str) -> dict[str, Any] | None:
        with self._lock:
            call = self._slow_calls.get(call_id)
            return dict(call) if call is not None else None
