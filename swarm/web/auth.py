"""Role tokens for `swarm web`: HS256 JWTs that say who the bearer is and what it may do.

Three roles: `viewer` reads the board; `captain` also creates, assigns, retries, cancels and
re-prioritises tasks; `agent` reads and acts as the one agent its token names (claim, heartbeat,
done, fail, progress, inbox, send). Every token is bound to one swarm (its audience), so a token
for one swarm sharing the secret is refused by another. The secret is `SWARM_WEB_SECRET`, or a
random one kept in `$SWARM_HOME/web.secret`, created with mode 0600 on first use.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast, get_args

import jwt
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from swarm.errors import ConfigError, Unauthorized, WrongRole
from swarm.protocol import AGENT_PATTERN, new_id
from swarm.settings import Settings

Role = Literal["captain", "agent", "viewer"]
ROLES: tuple[Role, ...] = get_args(Role)
KEY_FILE = "web.secret"
MIN_SECRET = 32
"""Bytes: HS256 keys shorter than its 256-bit hash are guessable offline from one token."""
MAX_TTL_S = 366 * 86_400
_ALGORITHM = "HS256"
_AGENT = re.compile(AGENT_PATTERN)
_TTL = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
ISSUE = "`swarm web token --role ROLE` on the machine that serves the board issues one"


class WebSettings(BaseSettings):
    """The web server's own knobs, from `SWARM_WEB_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="SWARM_WEB_", frozen=True, extra="ignore")

    secret: SecretStr | None = Field(
        None, description=f"Signing secret (at least {MIN_SECRET} characters); unset: $SWARM_HOME/{KEY_FILE}."
    )
    max_body_bytes: int = Field(256 * 1024, ge=1024, description="Largest request body accepted.")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a valid token speaks for: its role, its name (the agent's, or the role's), its expiry (s)."""

    role: Role
    name: str
    expires: int

    @property
    def article(self) -> str:
        """`a viewer`, `an agent`, `a captain`: the role as a message names it."""
        return f"{'an' if self.role[0] in 'aeiou' else 'a'} {self.role}"

    def captain(self, what: str) -> None:
        """Forbidden unless this is a captain: `what` is the action, for the message."""
        if self.role != "captain":
            raise WrongRole(f"{self.article} token cannot {what}: that needs a captain token "
                            "(`swarm web token --role captain`)")

    def acting_as(self, agent: str) -> None:
        """Forbidden unless this is the agent token of `agent`."""
        if self.role != "agent":
            raise WrongRole(f"{self.article} token cannot act as agent {agent}: that needs its agent token "
                            f"(`swarm web token --role agent --agent {agent}`)")
        if self.name != agent:
            raise WrongRole(f"this token acts as agent {self.name}, not {agent}")


def parse_ttl(value: str) -> int:
    """Seconds in a duration such as `1d`, `12h`, `30m`, `90s` or `3600` (seconds)."""
    found = _TTL.fullmatch(value.strip())
    seconds = float(found[1]) * _UNITS[found[2]] if found else 0
    if not found or not 1 <= seconds <= MAX_TTL_S:
        raise ConfigError(f"--ttl {value!r} is not a duration from 1s to 366d: use a number with s, m, h, d or w "
                          "(for example 1d or 12h)")
    return int(seconds)


def _secret_from_file(home: Path) -> bytes:
    """The secret in `home/web.secret`, made (random, mode 0600) when there is none yet."""
    path = home / KEY_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        # Written whole under a temporary name, then linked into place: a second process starting at
        # the same moment either links first or reads the complete file, never a half-written one.
        temp = home / f".{KEY_FILE}.{os.getpid()}.{new_id()}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48) + "\n")
            with contextlib.suppress(FileExistsError):  # another process made it first: use that one
                os.link(temp, path)
        finally:
            temp.unlink(missing_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by other users (mode {mode:04o}), and anyone who reads it can sign "
                          f"tokens: `chmod 600 {path}`, then issue new tokens")
    value = path.read_text().strip()
    if len(value) < MIN_SECRET:
        raise ConfigError(f"{path} holds a secret of {len(value)} characters; it needs at least {MIN_SECRET}: "
                          "delete the file to have a new one made (tokens signed with the old one stop working)")
    return value.encode()


class Tokens:
    """Issues and checks the role tokens of one swarm."""

    def __init__(self, secret: bytes, swarm: str) -> None:
        self._secret = secret
        self.audience = f"swarm:{swarm}"

    @classmethod
    def load(cls, settings: Settings, web: WebSettings | None = None) -> Tokens:
        """With `SWARM_WEB_SECRET`, or the secret file under `SWARM_HOME` (made on first use)."""
        secret = (web or WebSettings()).secret
        if secret is not None:
            value = secret.get_secret_value()
            if len(value.encode()) < MIN_SECRET:
                raise ConfigError(f"SWARM_WEB_SECRET is {len(value.encode())} bytes; it needs at least {MIN_SECRET} "
                                  "(for example the output of `python -c 'import secrets; "
                                  "print(secrets.token_urlsafe(48))'`)")
            return cls(value.encode(), settings.name)
        return cls(_secret_from_file(settings.home), settings.name)

    def issue(self, role: str, agent: str | None = None, ttl_s: int = 86_400) -> str:
        """A token for `role`; an agent token names its agent, the others must not."""
        if role not in ROLES:
            raise ConfigError(f"--role {role!r} is not a role; use one of: {', '.join(ROLES)}")
        if role == "agent":
            if not agent:
                raise ConfigError("--agent is missing: an agent token acts as one agent, for example "
                                  "--role agent --agent agent-1")
            if not _AGENT.match(agent):
                raise ConfigError(f"--agent {agent!r} is not an agent name: use 1-64 letters, digits, '_', '.' or "
                                  "'-' (for example agent-1)")
        elif agent:
            raise ConfigError(f"--agent is only for agent tokens; a {role} token acts for no agent")
        if not 1 <= ttl_s <= MAX_TTL_S:
            raise ConfigError(f"a token's lifetime must be 1 s to 366 days, got {ttl_s} s")
        now = int(datetime.now(UTC).timestamp())
        claims = {"sub": agent or role, "role": role, "aud": self.audience, "iat": now, "exp": now + ttl_s,
                  "jti": new_id()}
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def verify(self, token: str) -> Principal:
        """The principal of a valid token, or Unauthorized saying what is wrong with it."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._secret, algorithms=[_ALGORITHM], audience=self.audience,
                options={"require": ["sub", "role", "aud", "iat", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            expired = jwt.decode(token, options={"verify_signature": False}).get("exp", 0)
            at = datetime.fromtimestamp(int(expired), tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
            raise Unauthorized(f"the token expired at {at} UTC; {ISSUE}") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized(f"the token is for another swarm, not {self.audience}; {ISSUE}") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized(f"the token is not signed with this board's secret; {ISSUE}") from None
        except jwt.DecodeError:
            raise Unauthorized(f"the bearer token is not a JWT; {ISSUE}") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"the token is not valid: {exc}; {ISSUE}") from None
        role, name = claims["role"], claims["sub"]
        if role not in ROLES or not isinstance(name, str) or not _AGENT.match(name):
            raise Unauthorized(f"the token names no known role and name; {ISSUE}")
        return Principal(cast(Role, role), name, int(claims["exp"]))
