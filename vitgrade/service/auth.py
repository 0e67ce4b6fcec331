"""Bearer tokens: printed once when made, stored only as a sha256. A role says what a caller may
do; a student sees only their own submissions."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from .db import Token

Role = Literal["student", "ta", "instructor", "lms"]
ROLES: tuple[Role, ...] = ("student", "ta", "instructor", "lms")
STAFF: frozenset[str] = frozenset({"ta", "instructor", "lms"})  # may read every submission and every test
PREFIX = "vg_"


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
