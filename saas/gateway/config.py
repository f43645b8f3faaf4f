"""Gateway settings from a TOML file and READROOM_GATEWAY_* environment variables, validated before anything starts."""

from __future__ import annotations

import re
import stat
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "READROOM_GATEWAY_"
TOKEN_ENV = f"{ENV_PREFIX}API_TOKEN"
DEFAULT_LISTEN_HOST = "127.0.0.1"
DEFAULT_LISTEN_PORT = 11112

# The settings each subcommand cannot work without; `status` only reads the spool.
REQUIRED_FOR = {
    "serve": ("platform_url", "tenant_slug", "api_token", "spool_dir"),
    "echo": ("platform_url", "tenant_slug", "api_token"),
    "status": ("spool_dir",),
}

# Django's slug converter: anything else could never match /dicomweb/<slug>/studies.
SLUG_PATTERN = re.compile(r"[-a-zA-Z0-9_]+")


class ConfigError(Exception):
    """One or more settings are missing or invalid; the message names each of them."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class GatewayConfig:
    ae_title: str = "READROOM_GW"
    # The devices allowed to send (their calling AE titles); empty: any device that calls ae_title.
    calling_ae_titles: tuple[str, ...] = ()
    listen_host: str = DEFAULT_LISTEN_HOST
    listen_port: int = DEFAULT_LISTEN_PORT
    platform_url: str | None = None
    tenant_slug: str | None = None
    spool_dir: Path | None = None
    max_batch_instances: int = 50
    max_batch_bytes: int = 64 * 1024 * 1024
    retry_backoff_base: float = 1.0
    retry_backoff_max: float = 60.0
    tls_verify: bool = True
    ca_bundle: Path | None = None
    request_timeout: float = 120.0
    api_token_file: Path | None = None
    # The secret never appears in a repr, a log line or an error message.
    api_token: str | None = field(default=None, repr=False)

    @property
    def stow_url(self) -> str:
        return f"{self.platform_url}/dicomweb/{self.tenant_slug}/studies"

    @property
    def me_url(self) -> str:
        return f"{self.platform_url}/api/v1/me/"

    @property
    def requests_verify(self) -> bool | str:
        if not self.tls_verify:
            return False
        return str(self.ca_bundle) if self.ca_bundle else True

    def current_token(self) -> str:
        """The token to send now: a token file is read again so that rotating it needs no restart."""
        if self.api_token_file is not None:
            try:
                return _read_token_file(self.api_token_file)
            except ConfigError:
                # Mid-rotation (file briefly missing or empty): the token read at start-up still stands.
                pass
        if self.api_token is None:
            raise ConfigError(["api_token: not set"])
        return self.api_token


def _read_token_file(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConfigError([f"api_token_file: cannot read {path}: {error.strerror}"]) from error
    except UnicodeDecodeError as error:
        raise ConfigError([f"api_token_file: {path} is not a text file (byte {error.start} is not UTF-8)"]) from error
    if not token or any(character.isspace() for character in token):
        raise ConfigError([f"api_token_file: {path} must hold exactly one token on one line"])
    return token


def _readable_file(path: Path) -> bool:
    try:
        with path.open("rb"):
            return path.is_file()
    except OSError:
        return False


def token_file_is_shared(path: Path) -> bool:
    """Whether other users on the clinic machine could read the token file."""
    return bool(path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH))


# --- converters: each takes the raw value (TOML-typed or an environment string) and raises ValueError


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    return value.strip()


def _ae_title(value: Any) -> str:
    title = _text(value)
    if not 0 < len(title) <= 16 or "\\" in title or not title.isascii() or not title.isprintable():
        raise ValueError(f"must be 1 to 16 printable ASCII characters without a backslash, got {title!r}")
    return title


def _ae_titles(value: Any) -> tuple[str, ...]:
    """A TOML list of AE titles, or (from the environment) one string of them separated by commas."""
    if isinstance(value, str):
        items: list[Any] = [item for item in value.split(",") if item.strip()]
    elif isinstance(value, list):
        items = value
    else:
        raise ValueError(f"must be a list of AE titles, got {value!r}")
    titles = []
    for item in items:
        try:
            titles.append(_ae_title(item))
        except ValueError as error:
            raise ValueError(f"each AE title {error}") from None
    return tuple(dict.fromkeys(titles))


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"must be an integer from {low} to {high}, got {value!r}")
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"must be an integer from {low} to {high}, got {value!r}") from None
        if not low <= number <= high:
            raise ValueError(f"must be an integer from {low} to {high}, got {number}")
        return number

    return convert


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"must be a number of seconds, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"must be a number of seconds, got {value!r}") from None
    if not 0 < number <= 24 * 3600:
        raise ValueError(f"must be more than 0 and at most 86400 seconds, got {number}")
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    words = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
    if isinstance(value, str) and value.strip().lower() in words:
        return words[value.strip().lower()]
    raise ValueError(f"must be true or false, got {value!r}")


def _platform_url(value: Any) -> str:
    url = _text(value).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL such as https://readroom.example, got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"must not carry a query or fragment, got {url!r}")
    return url


def _slug(value: Any) -> str:
    slug = _text(value)
    if not SLUG_PATTERN.fullmatch(slug):
        raise ValueError(f"must be the clinic's slug (letters, digits, '-' and '_'), got {slug!r}")
    return slug


def _path(value: Any) -> Path:
    text = _text(value)
    if not text:
        raise ValueError("must be a path, got an empty string")
    return Path(text).expanduser()


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "ae_title": _ae_title,
    "calling_ae_titles": _ae_titles,
    "listen_host": _text,
    "listen_port": _integer(1, 65535),
    "platform_url": _platform_url,
    "tenant_slug": _slug,
    "spool_dir": _path,
    "max_batch_instances": _integer(1, 1000),
    "max_batch_bytes": _integer(1024, 4 * 1024**3),
    "retry_backoff_base": _seconds,
    "retry_backoff_max": _seconds,
    "tls_verify": _boolean,
    "ca_bundle": _path,
    "request_timeout": _seconds,
    "api_token_file": _path,
}
PATH_KEYS = frozenset({"spool_dir", "ca_bundle", "api_token_file"})


def env_name(key: str) -> str:
    return f"{ENV_PREFIX}{key.upper()}"


def _where(key: str, config_path: Path | None) -> str:
    places = [env_name(key)] if key != "api_token" else [TOKEN_ENV]
    if config_path is not None:
        places.insert(0, f"{key if key != 'api_token' else 'api_token_file'} in {config_path}")
    elif key == "api_token":
        places.append(env_name("api_token_file"))
    return " or ".join(places)


def load_config(*, config_path: Path | None, environ: Mapping[str, str], command: str = "serve") -> GatewayConfig:
    """Settings from the file, overridden by the environment; raises ConfigError naming every bad or missing one."""
    problems: list[str] = []
    raw: dict[str, tuple[Any, str]] = {}

    if config_path is not None:
        try:
            document = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError([f"--config: cannot read {config_path}: {error.strerror}"]) from error
        except UnicodeDecodeError as error:
            raise ConfigError(
                [f"--config: {config_path} must be saved as UTF-8 (byte {error.start} is not UTF-8)"]
            ) from error
        except tomllib.TOMLDecodeError as error:
            raise ConfigError([f"--config: {config_path} is not valid TOML: {error}"]) from error
        for key, value in document.items():
            if key == "api_token":
                # A secret in a config file ends up in backups and support tickets; a 0600 file
                # or the environment do not.
                problems.append(
                    f"api_token: do not put the token in {config_path}; "
                    f"set api_token_file to a file only the gateway can read, or {TOKEN_ENV}"
                )
            elif key not in CONVERTERS:
                problems.append(f"{key}: unknown setting in {config_path} (known: {', '.join(sorted(CONVERTERS))})")
            else:
                if key in PATH_KEYS and isinstance(value, str) and not Path(value).expanduser().is_absolute():
                    # Relative paths in the file mean relative to the file, wherever the service is started from.
                    value = str(config_path.parent / value)
                raw[key] = (value, f"{key} in {config_path}")

    for key in CONVERTERS:
        if env_name(key) in environ:
            raw[key] = (environ[env_name(key)], env_name(key))

    values: dict[str, Any] = {}
    for key, (value, source) in raw.items():
        try:
            values[key] = CONVERTERS[key](value)
        except ValueError as error:
            problems.append(f"{key}: {error} (from {source})")

    token_from_env = environ.get(TOKEN_ENV, "").strip() or None
    if token_from_env is not None and any(character.isspace() for character in token_from_env):
        problems.append(f"api_token: {TOKEN_ENV} must be one token without spaces")
    if token_from_env and values.get("api_token_file"):
        problems.append(f"api_token: set either {TOKEN_ENV} or api_token_file, not both")
    elif token_from_env:
        values["api_token"] = token_from_env
    elif values.get("api_token_file"):
        try:
            values["api_token"] = _read_token_file(values["api_token_file"])
        except ConfigError as error:
            problems.extend(error.problems)

    if "retry_backoff_base" in values or "retry_backoff_max" in values:
        base = values.get("retry_backoff_base", GatewayConfig.retry_backoff_base)
        maximum = values.get("retry_backoff_max", GatewayConfig.retry_backoff_max)
        if maximum < base:
            problems.append(f"retry_backoff_max: must be at least retry_backoff_base ({base}), got {maximum}")
    if values.get("tls_verify") is False and values.get("ca_bundle"):
        problems.append("ca_bundle: is set but tls_verify is false; drop one of them")
    if values.get("ca_bundle") and not _readable_file(values["ca_bundle"]):
        problems.append(f"ca_bundle: {values['ca_bundle']} is not a readable file")

    for key in REQUIRED_FOR[command]:
        already_named = any(problem.split(":")[0] in (key, f"{key}_file") for problem in problems)
        if values.get(key) is None and not already_named:
            problems.append(f"{key}: not set; set {_where(key, config_path)}")

    if problems:
        raise ConfigError(problems)
    return GatewayConfig(**values)
