"""One settings object, read from `SWARM_*` environment variables and passed down explicitly."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from swarm.protocol import AGENT_PATTERN

HOME = ".swarm"
"""The folder name of a swarm's home (`SWARM_HOME` when that is not set)."""


def find_home(start: Path | None = None) -> Path:
    """The swarm home for work in `start` (default: the working directory): the `.swarm` folder in
    it or in the nearest folder above it that has one, the way git finds `.git`, so every folder
    of a project uses the project's server and board; `start/.swarm` when no folder up has one."""
    try:
        here = (start or Path.cwd()).resolve()
    except OSError:  # the working directory was deleted under us
        return Path(HOME)
    for folder in (here, *here.parents):
        if (folder / HOME).is_dir():
            return folder / HOME
    return here / HOME


class Settings(BaseSettings):
    """Everything a swarm process needs to know. No module-level singleton: build one and pass it."""

    model_config = SettingsConfigDict(env_prefix="SWARM_", frozen=True, extra="ignore")

    name: str = Field("default", description="Swarm name; every key of one swarm shares its hash tag.")
    redis_url: str | None = Field(None, description="redis://, rediss:// or unix://; unset = embedded Valkey.")
    user: str | None = Field(None, description="Redis ACL user to connect as, when SWARM_REDIS_URL names none "
                                               "(`swarm acl add` makes one per agent).")
    password: SecretStr | None = Field(None, description="That user's password, when SWARM_REDIS_URL has none.")
    tls_ca: Path | None = Field(None, description="CA file that signed the server's certificate (rediss://).")
    tls_cert: Path | None = Field(None, description="Client certificate for rediss://, when the server asks.")
    tls_key: Path | None = Field(None, description="The client certificate's key.")
    home: Path = Field(
        default_factory=find_home,
        description="Where the embedded server keeps its data and logs; unset: the nearest `.swarm` up from here.",
    )
    stream_maxlen: int = Field(100_000, ge=100, description="Approximate MAXLEN of every stream.")
    max_message_bytes: int = Field(64 * 1024, ge=256, description="Size limit on encode and decode.")
    publish_rate: float = Field(1_000.0, ge=0, description="Messages a second one sender may publish (a token "
                                "bucket per sender, in the publish script); 0 = no limit.")
    publish_burst: int = Field(2_000, ge=1, description="Messages one sender may publish at once after a quiet "
                               "spell (the bucket's size).")
    max_deliveries: int = Field(5, ge=1, description="Deliveries after which an entry is dead-lettered.")
    reclaim_idle_ms: int = Field(30_000, ge=10, description="Pending entries idle this long are reclaimed.")
    reclaim_every_s: float = Field(5.0, gt=0, description="How often a consumer reclaims dead peers' entries.")
    block_ms: int = Field(1_000, ge=1, description="XREADGROUP BLOCK; bounds how fast a consumer sees stop.")
    read_count: int = Field(128, ge=1, description="Entries fetched per XREADGROUP call.")
    connect_retries: int = Field(6, ge=0, description="Retries with exponential backoff on connection loss.")
    log_level: str = Field("info", description="debug, info, warning or error.")
    uvloop: bool = Field(True, description="Run the CLI's event loop on uvloop when it is installed.")
    forget_agents_after: float = Field(
        86_400.0, gt=0, description="Seconds (default 1 day) after which a gone agent is no longer listed by "
        "`swarm agents`, and `swarm agents --prune` forgets it.",
    )
    lease_s: float = Field(30.0, gt=0, description="Task lease; heartbeats extend it, expiry reclaims the task.")
    max_attempts: int = Field(3, ge=1, description="Default attempts per task before it is failed.")
    retry_backoff_s: float = Field(1.0, ge=0, description="First retry delay; doubles per attempt, capped at 60 s.")
    heartbeat_s: float = Field(
        2.0, gt=0, description="Agent heartbeat period (at most lease_s / 3); stale after 3, gone after 15."
    )
    leader_lease_s: float = Field(5.0, gt=0, description="Captain leader lease; a standby takes over after it.")
    budget_usd: float | None = Field(None, ge=0, description="The swarm's budget in USD (reported usage): once "
                                                             "spent, no task is claimed or assigned.")
    keep_done: float = Field(7 * 86_400, gt=0, description="Finished tasks (done, failed, cancelled) and their "
                                                             "history are removed this long after they finished.")
    presence: bool = Field(True, description="Reap agents whose connections closed (seconds, not a lease); "
                                             "turn off behind a proxy that hides client connections.")

    @property
    def heartbeat_period_s(self) -> float:
        """How often an agent heartbeats and renews its task leases: every `heartbeat_s`, or every third
        of `lease_s` when that is shorter, so a lease is renewed several times before it can run out."""
        return min(self.heartbeat_s, self.lease_s / 3)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not re.match(AGENT_PATTERN, value):
            raise ValueError(
                f"swarm name {value!r} must be 1-64 characters of letters, digits, '_', '.' or '-'"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"SWARM_REDIS_URL {value!r} must start with redis://, rediss:// or unix:// "
                "(or leave it unset to use the embedded server)"
            )
        return value
