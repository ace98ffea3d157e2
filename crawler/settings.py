"""One validated Settings object built from the shipped defaults, a TOML file and the environment.

Layering (later wins): ``config/defaults.toml`` shipped with the package, the operator's file
(``--config PATH`` or ``LITWATCH_CONFIG``), then ``LITWATCH_<SECTION>_<KEY>`` environment
variables (``LITWATCH_EMAIL_SMTP_HOST`` for a nested table, ``LITWATCH_TOPICS_<NAME>_TERMS``
for a defined topic, ``LITWATCH_SOURCES`` for the whole source list; list values as JSON).
Any other ``LITWATCH_`` variable is an error, so a misspelt override is never silently
ignored. Tables merge key by key; lists replace. Secrets are read from the environment only
and never appear in :meth:`Settings.redacted`.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from crawler.settings_model import (
    CONFIG_ENV,
    RESERVED_ENV,
    SECRET_ENV,
    ConfigError,
    CrawlSettings,
    CrossrefSettings,
    DaemonSettings,
    DatabaseSettings,
    DigestSettings,
    EmailSettings,
    LifecycleSettings,
    LocatedError,
    PubmedSettings,
    Settings,
    SmtpSettings,
    SourceSettings,
    TopicSettings,
    WebSettings,
    _scrub,
    parse_duration,
)

__all__ = [
    "CONFIG_ENV",
    "RESERVED_ENV",
    "SECRET_ENV",
    "ConfigError",
    "CrawlSettings",
    "CrossrefSettings",
    "DaemonSettings",
    "DatabaseSettings",
    "DigestSettings",
    "EmailSettings",
    "LifecycleSettings",
    "PubmedSettings",
    "Settings",
    "SmtpSettings",
    "SourceSettings",
    "TopicSettings",
    "WebSettings",
    "load_settings",
    "parse_duration",
]


def defaults_path() -> Path:
    """The shipped defaults: inside the wheel as crawler/_config, in a checkout as config/."""
    here = Path(__file__).resolve().parent
    packaged = here / "_config" / "defaults.toml"
    return packaged if packaged.is_file() else here.parent / "config" / "defaults.toml"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not valid TOML: {' '.join(str(exc).split())}"
        ) from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8 only; tomllib does not wrap this one
        raise ConfigError(
            f"config file {path} is not valid TOML: not UTF-8 (byte {exc.start})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:
    """Map every LITWATCH_<SECTION>_<KEY> name to its key path in the config."""
    out: dict[str, tuple[str, ...]] = {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        path = (*prefix, key)
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(_env_paths(ann, path))
        elif prefix:
            out["LITWATCH_" + "_".join(p.upper() for p in path)] = path
    return out


def _env_value(raw: str) -> Any:
    text = raw.strip()
    if text.startswith(("[", "{")):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    return raw


def _topic_env_paths(data: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """``LITWATCH_TOPICS_<NAME>_<KEY>`` for the topics defined so far (JSON lists as values)."""
    out: dict[str, tuple[str, ...]] = {}
    topics = data.get("topics")
    for name in topics if isinstance(topics, dict) else {}:
        env_name = re.sub(r"[^A-Za-z0-9]", "_", str(name)).upper()
        for key in TopicSettings.model_fields:
            out[f"LITWATCH_TOPICS_{env_name}_{key.upper()}"] = ("topics", name, key)
    return out


def _apply_env(data: dict[str, Any], environ: dict[str, str]) -> tuple[dict[str, Any], set[str]]:
    # Sections' keys, the topics already defined, and LITWATCH_SOURCES (a JSON list that
    # replaces the sources, as a list in the file would).
    known = _env_paths(Settings) | _topic_env_paths(data) | {"LITWATCH_SOURCES": ("sources",)}
    used: set[str] = set()
    for name, raw in sorted(environ.items()):
        if not name.startswith("LITWATCH_") or name in RESERVED_ENV:
            continue
        path = known.get(name)
        if path is None:
            # A misspelt override silently ignored would leave the operator guessing.
            raise ConfigError(f"unknown configuration key in environment variable {name}")
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _env_value(raw)
        used.add(".".join(path))
    return data, used


def _where(
    loc: tuple[Any, ...], user: dict[str, Any], user_path: Path | None, env: set[str]
) -> str:
    dotted = ".".join(str(p) for p in loc if not isinstance(p, int))
    if any(dotted == e or dotted.startswith(e + ".") for e in env):
        return "environment (LITWATCH_" + dotted.replace(".", "_").upper() + ")"
    node: Any = user
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return str(user_path) if user_path and loc and loc[0] in user else str(defaults_path())
    return str(user_path) if user_path else str(defaults_path())


def _loc_text(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def load_settings(
    path: str | Path | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Build and validate the settings; raise ConfigError with one clear line when invalid."""
    environ = dict(os.environ if environ is None else environ)
    if path is None and environ.get(CONFIG_ENV):
        path = environ[CONFIG_ENV]
    user_path = Path(path) if path else None
    data = _read_toml(defaults_path())
    user = _read_toml(user_path) if user_path else {}
    data = _merge(data, user)
    data, env_used = _apply_env(data, environ)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        secrets = [v for v in (environ.get(n) for n in SECRET_ENV) if v]
        where = _Origin(data, user, user_path, env_used, secrets)
        raise ConfigError(where.line(exc.errors()[0])) from None


class _Origin:
    """What an error line needs to know: the merged data and where each part came from."""

    def __init__(
        self,
        data: dict[str, Any],
        user: dict[str, Any],
        user_path: Path | None,
        env: set[str],
        secrets: list[str],
    ) -> None:
        self.data, self.user, self.user_path = data, user, user_path
        self.env, self.secrets = env, secrets

    def line(self, err: Any) -> str:
        """One line whatever the validator said (the CLI prints it as the whole diagnosis):
        the file or variable, the source, the key, the complaint and the value given."""
        loc = tuple(err["loc"])
        located = (err.get("ctx") or {}).get("error")
        if isinstance(located, LocatedError):
            loc = (*loc, *located.loc)
        where = _where(loc, self.user, self.user_path, self.env)
        msg = " ".join(err["msg"].removeprefix("Value error, ").split())
        if err["type"] == "extra_forbidden":
            msg = "unknown key"  # an unknown key's value says nothing more
        else:
            found, value = _at(self.data, loc)
            if found and isinstance(value, str) and value and value in msg:
                msg = msg.replace(value, _scrub(value, self.secrets))  # a validator quoted it
            msg += _given(self.data, loc, self.secrets, msg)
        return f"config error in {where}: {_source(self.data, loc, msg)}{_loc_text(loc)}: {msg}"


#: How much of a bad value an error line quotes.
GIVEN_MAX = 60
#: Keys whose values are never quoted (a secret typed into the file by mistake).
_SECRET_KEY = re.compile(r"password|secret|token|api_?key", re.IGNORECASE)


def _at(data: Any, loc: tuple[Any, ...]) -> tuple[bool, Any]:
    """The value at ``loc`` in the merged configuration: (found, value)."""
    node = data
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False, None
    return True, node


def _given(data: dict[str, Any], loc: tuple[Any, ...], secrets: list[str], msg: str) -> str:
    """`` (given: 'gopher')``: the value at fault, truncated, secrets and URL passwords masked;
    empty when there is no single value to show (a missing key, a whole table) or when the
    message already quotes it."""
    found, value = _at(data, loc)
    tables = isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
    if not found or isinstance(value, dict) or tables:
        return ""
    if any(_SECRET_KEY.search(str(part)) for part in loc):
        return " (given: ***)"
    shown = repr(_scrub(value, secrets))
    if len(shown) > GIVEN_MAX:
        shown = shown[: GIVEN_MAX - 3] + "..."
    if shown in msg:
        return ""
    return f" (given: {shown})"


def _source(data: dict[str, Any], loc: tuple[Any, ...], msg: str) -> str:
    """``source 'x': `` for an error under ``[[sources]]`` whose item has a usable id."""
    if len(loc) < 2 or loc[0] != "sources" or not isinstance(loc[1], int):
        return ""
    found, item = _at(data, loc[:2])
    source_id = item.get("id") if found and isinstance(item, dict) else None
    if not isinstance(source_id, str) or not source_id.strip():
        return ""
    label = f"source {_scrub(source_id[:GIVEN_MAX], [])!r}"
    return "" if label in msg else f"{label}: "
