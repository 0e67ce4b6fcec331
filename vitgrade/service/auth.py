"""Bearer tokens: printed once when made, stored only as a sha256. A role says what a caller may
do; a student sees only their own submissions."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from .db import Token

Role = Literal["student", "ta", "instructor", "lms"]
ROLES: tuple[Role, ...] = ("student", "ta", "instructor", "lms")
STAFF: frozenset[str] = frozenset({"ta", "instructor", "lms"})  # may read every submission and every test
PREFIX = "vg_"
COOKIE = "vitgrade_token"  # the pages keep the token here (HttpOnly, SameSite=Strict)
SAFE_METHODS = frozenset({"GET", "HEAD"})


def same_origin(headers: Mapping[str, str], host: str) -> bool:
    """Whether a browser sent this request from one of our own pages: what a cookie may authorize
    beyond reading (SameSite does not stop a sibling subdomain)."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site in {"same-origin", "none"}
    origin = headers.get("origin")
    return origin is not None and origin.split("://", 1)[-1] == host


@dataclass(frozen=True)
class Caller:
    user: str
    role: Role

    @property
    def staff(self) -> bool:
        return self.role in STAFF


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, role: Role, user: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    token = PREFIX + secrets.token_urlsafe(32)
    session.add(Token(hash=digest(token), role=role, user=user))
    session.commit()
    return token


def lookup(session: Session, token: str) -> Caller | None:
    row = session.scalar(select(Token).where(Token.hash == digest(token)))
    return Caller(row.user, row.role) if row is not None else None  # type: ignore[arg-type]
