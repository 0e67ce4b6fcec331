"""Webhook deliveries from the outbox: a POST per result, signed with HMAC-SHA256 over
`<timestamp>.<body>` with the assignment's secret, retried with exponential backoff.

A receiver verifies `X-Vitgrade-Signature: t=<unix seconds>,v1=<hex>` by computing
hmac_sha256(secret, f"{t}.{raw body}") and comparing it in constant time, and refuses a t more
than five minutes old (a replayed delivery)."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import timedelta

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from .db import Assignment, Delivery, Result, Submission, db_now

MAX_ATTEMPTS = 8
CLAIM_S = 60.0  # a delivery being sent is not taken by another sender for this long
HEADER = "X-Vitgrade-Signature"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, body: bytes, header: str, tolerance_s: float = 300.0) -> bool:
    """What a receiver does (tests use it too): the signature matches and is recent."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(3600, 2 ** attempts))


class Sender:
    """Sends due deliveries until stopped; several senders (API replicas) never send one twice at once."""

    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions
        self.client = httpx.Client(timeout=10.0)

    def send_due(self) -> int:
        """Send the deliveries due, each claimed first (API replicas share the outbox; their times are the database's)."""
        sent = 0
        with self.sessions() as session:
            due = session.scalars(select(Delivery.id).where(Delivery.state == "pending", Delivery.next_at <= db_now(session)).limit(20)).all()
            for delivery_id in due:
                at = db_now(session)
                claimed = session.execute(
                    update(Delivery).where(Delivery.id == delivery_id, Delivery.state == "pending", Delivery.next_at <= at)
                    .values(next_at=at + timedelta(seconds=CLAIM_S), attempts=Delivery.attempts + 1)
                )  # fmt: skip
                session.commit()
                if claimed.rowcount == 1:  # type: ignore[attr-defined]
                    sent += self.send(session, delivery_id)
        return sent

    def send(self, session: Session, delivery_id: int) -> bool:
        delivery = session.get(Delivery, delivery_id, populate_existing=True)
        assert delivery is not None
        secret = session.scalar(
            select(Assignment.webhook_secret).join(Submission, Submission.assignment == Assignment.name)
            .join(Result, Result.submission_id == Submission.id).where(Result.id == delivery.result_id)
        ) or ""  # fmt: skip
        body = delivery.body.encode()
        headers = {"Content-Type": "application/json", HEADER: sign(secret, body, int(time.time()))}
        try:
            response = self.client.post(delivery.url, content=body, headers=headers)
            error = None if response.is_success else f"HTTP {response.status_code}"
        except Exception as exc:  # a bad URL, a refused connection: this delivery's error, not the sender's
            error = f"{type(exc).__name__}: {exc}"[:300]
        if error is None:
            delivery.state, delivery.delivered_at, delivery.last_error = "delivered", db_now(session), None
        else:
            delivery.last_error = error
            delivery.state = "dead" if delivery.attempts >= MAX_ATTEMPTS else "pending"
            delivery.next_at = db_now(session) + backoff(delivery.attempts)
        session.commit()
        return error is None
