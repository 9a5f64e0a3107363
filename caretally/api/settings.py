"""The service's settings: flags over ``CARETALLY_*`` variables over defaults, checked at start.

Nothing here runs at import time: ``load_settings`` builds a ``Settings`` when the server
starts (or a test asks), and any unusable value is one ``SettingsError`` line naming the
variable. The secret key is never a placeholder or short; on the embedded SQLite default
a new user need not invent one — ``resolve_secret`` generates it on first start and
keeps it in ``<database file>.secret`` (mode 0600) beside the database, which is where
whoever can read the data could read it anyway. A PostgreSQL deployment must pass
``CARETALLY_SECRET_KEY``: the server and its database may be on different machines, and
the key should come from the deployment's own secret store.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

MIN_SECRET = 32
_PLACEHOLDERS = ("changethis", "changeme", "change-me", "change_me", "secret", "password", "example", "xxxx")
SECRET_SUFFIX = ".secret"


class SettingsError(Exception):
    """A setting cannot be used; the message is one line naming it, the hint says what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class Settings(BaseSettings):
    """Everything the server reads from its environment; each field is ``CARETALLY_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="CARETALLY_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    database_url: str | None = Field(
        default=None, description="Database URL (default sqlite:///caretally.db)"
    )
    secret_key: SecretStr | None = Field(default=None, description="Keys session ids and CSRF tokens")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    session_idle_minutes: int = Field(default=15, ge=1, le=24 * 60)
    session_max_hours: int = Field(default=12, ge=1, le=24 * 30)
    max_body_bytes: int = Field(default=5 * 1024**2, ge=1024, description="Largest JSON request body")
    max_upload_bytes: int = Field(default=100 * 1024**2, ge=1024, description="Largest zipped bundle")
    max_unpacked_bytes: int = Field(default=2 * 1024**3, ge=1024, description="Largest unzipped bundle")
    access_log: bool = Field(default=True, description="One PHI-free line per request")
    log_level: str = "info"
    # Month-close jobs (caretally.jobs): the queue, its consumers, and the practice identity.
    redis_url: str | None = Field(default=None, description="Redis for the job queue (default: SQLite file)")
    queue_file: str | None = Field(
        default=None, description="The embedded job queue's file (default: <database file>.queue)"
    )
    in_process_worker: bool | None = Field(
        default=None, description="Run a job consumer inside the server (default: yes unless Redis is set)"
    )
    job_heartbeat_seconds: float = Field(default=5.0, gt=0, le=300, description="Consumer heartbeat")
    range_size: int | None = Field(
        default=None, ge=1, description="Split month runs across workers in ranges of this many patients"
    )
    practice_file: str | None = Field(
        default=None,
        description="Practice identity TOML for 837P/FHIR claims, or a folder of <org id>.toml files",
    )

    @field_validator("secret_key")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_secret(value.get_secret_value())
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        levels = ("critical", "error", "warning", "info", "debug")
        if value.lower() not in levels:
            raise ValueError(f"must be one of {', '.join(levels)}")
        return value.lower()


def check_secret(text: str) -> None:
    lowered = text.lower()
    if len(text) < MIN_SECRET:
        raise ValueError(f"must be at least {MIN_SECRET} characters long")
    if any(p in lowered for p in _PLACEHOLDERS) or len(set(text)) < 10:
        raise ValueError("looks like a placeholder; use a random value")


def load_settings(**overrides: Any) -> Settings:
    """Settings from ``overrides`` (flags; ``None`` means not given) over the environment."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise SettingsError(
            f"setting {name} (CARETALLY_{name.upper()}): {message}",
            _HINTS.get(name, "see docs/api.md, section Settings"),
        ) from None


_HINTS = {
    "secret_key": "generate one: python3 -c 'import secrets; print(secrets.token_urlsafe(48))'",
    "port": "a TCP port between 1 and 65535",
}


def _sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; ``None`` for an in-memory or non-SQLite database."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if not parsed.drivername.startswith("sqlite"):
        return None
    if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file:"):
        return None
    return Path(parsed.database)


def secret_file(url: str) -> Path | None:
    found = _sqlite_file(url)
    return None if found is None else found.with_name(found.name + SECRET_SUFFIX)


def resolve_secret(settings: Settings, url: str) -> str:
    """The secret key to use: the configured one, else the kept (or new) one beside SQLite."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    if url.startswith("sqlite") and _sqlite_file(url) is None:
        return secrets.token_urlsafe(48)  # an in-memory database: nothing outlives the process
    path = secret_file(url)
    if path is None:
        raise SettingsError(
            "setting secret_key (CARETALLY_SECRET_KEY) is required with a server database",
            _HINTS["secret_key"] + " and pass it as CARETALLY_SECRET_KEY",
        )
    return _kept_secret(path)


def _kept_secret(path: Path) -> str:
    if not path.exists():
        # Written under a private name and linked into place: a second server starting at
        # the same moment either wins the link or reads the complete winner.
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(secrets.token_urlsafe(48) + "\n")
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass
            finally:
                temporary.unlink(missing_ok=True)
        except OSError as exc:
            raise SettingsError(f"cannot create the secret key file {path}: {exc.strerror}") from None
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SettingsError(f"cannot read the secret key file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingsError(
            f"the secret key file {path} can be read by other users", f"run: chmod 600 {path}"
        )
    try:
        check_secret(text)
    except ValueError as exc:
        raise SettingsError(
            f"the secret key in {path} {exc}", f"delete {path} to have a new one made"
        ) from None
    return text
