"""``healthpipe.yml``: loading and validation.

Every problem is reported as ``<file>: <key path>: <what was expected>`` so a user can fix
the file without reading code: unknown keys (typos), wrong types, sources that lack what
their type needs, and credentials whose environment variables are not set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from connectors.base import DEFAULT_MAX_FILE_BYTES
from pipelines.errors import ConfigError
from pipelines.schedules import schedule_interval

SourceType = Literal["dhis2", "fhir", "hl7v2", "odk", "kobo", "tabular"]
DEFAULT_WAREHOUSE = "duckdb:///var/healthpipe.duckdb"
WAREHOUSE_ENV = "HEALTHPIPE_WAREHOUSE"
CONFIG_ENV = "HEALTHPIPE_CONFIG"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

# Sources that speak HTTP need base_url; the others read a file drop or listen on a socket.
_HTTP_TYPES = {"fhir", "odk", "kobo"}
# Keys that mean something for some source types only.
_TYPE_SPECIFIC: dict[str, tuple[str, ...]] = {
    "data_sets": ("dhis2",),
    "org_units": ("dhis2",),
    "start_date": ("dhis2", "fhir"),
    "format": ("dhis2",),
    "registration_sweep_hours": ("dhis2",),
    "resource_types": ("fhir",),
    "bulk": ("fhir",),
    "project_id": ("odk",),
    "forms": ("odk",),
    "assets": ("kobo",),
    "entities": ("tabular",),
    "max_file_bytes": ("dhis2", "hl7v2"),
}


class SourceConfig(BaseModel):
    """One entry of ``sources:``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,39}$",
        description="unique; names raw rows, DAGs and audit entries",
    )
    type: SourceType
    base_url: str | None = Field(default=None, pattern=r"^https?://")
    path: Path | None = None
    listen: str | None = Field(default=None, pattern=r"^[^:\s]+:\d{1,5}$")
    username_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN)
    password_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN)
    token_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN)
    schedule: str | None = Field(
        default=None,
        description="how often the source should be pulled (@hourly, @daily, @weekly, "
        "@monthly or a duration such as 6h or 2d); `healthpipe status` reports freshness "
        "against it",
    )
    enabled: bool = True
    page_size: int = Field(default=50_000, gt=0)
    # HTTP sources send small pages (FHIR 100, ODK 1,000, DHIS2 tens of thousands), and
    # Great Expectations' fixed cost per batch grows with the reference sets (every org unit
    # id is in a value set): at 20,000 records per batch it was most of validation at M.
    landing_batch: int = Field(
        default=200_000,
        gt=0,
        description="records landed and validated together (consecutive pages are merged up "
        "to this many): larger batches pay Great Expectations' fixed costs less often, smaller "
        "ones hold less in memory and lose less work to a killed run",
    )
    timeout_seconds: float = Field(default=120.0, gt=0)
    overlap_seconds: int = Field(
        default=300,
        ge=0,
        description="incremental pulls re-read this far before the saved cursor, so records "
        "updated at the cursor's instant are never missed (re-landing them changes nothing)",
    )
    max_file_bytes: int = Field(
        default=DEFAULT_MAX_FILE_BYTES,
        gt=0,
        description="file drops (DHIS2, HL7 v2): the largest file parsed whole; a larger one "
        "is refused before it is read",
    )
    # dhis2
    data_sets: list[str] = Field(default_factory=list)
    org_units: list[str] = Field(default_factory=list)
    start_date: date | None = None
    format: Literal["json", "csv"] = "json"
    registration_sweep_hours: float = Field(
        default=24.0,
        ge=0,
        description="DHIS2 Web API: incremental pulls ask for the complete registrations "
        "registered since the cursor, and this often for every registration of the last 400 "
        "days of periods, the only way to see a report un-completed or imported with an older "
        "date (DHIS2 cannot filter registrations by lastUpdated); 0 sweeps on every pull",
    )
    # fhir
    resource_types: list[str] = Field(default_factory=list)
    bulk: bool = False
    # odk
    project_id: int | None = None
    forms: list[str] = Field(default_factory=list)
    # kobo
    assets: list[str] = Field(default_factory=list)
    # tabular
    entities: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_type_specific_keys(self) -> SourceConfig:
        for key, types in _TYPE_SPECIFIC.items():
            if key in self.model_fields_set and self.type not in types:
                raise ValueError(f"{key} applies to {' and '.join(types)} sources, not {self.type}")
        return self

    @field_validator("schedule")
    @classmethod
    def _check_schedule(cls, value: str | None) -> str | None:
        if value is not None:
            schedule_interval(value)
        return value

    @model_validator(mode="after")
    def _check_location(self) -> SourceConfig:
        if self.type in _HTTP_TYPES and self.base_url is None:
            raise ValueError(f"a {self.type} source needs base_url")
        if self.base_url is None and self.path is None and self.listen is None:
            raise ValueError("needs base_url (HTTP), path (file drop) or listen (MLLP)")
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("username_env and password_env go together")
        if self.token_env is not None and self.username_env is not None:
            raise ValueError("give either token_env or username_env/password_env, not both")
        return self

    def credential_env_names(self) -> dict[str, str]:
        """The config keys that name credential environment variables, with those names."""
        keys = ("username_env", "password_env", "token_env")
        return {key: value for key in keys if (value := getattr(self, key)) is not None}


class NotificationChannel(BaseModel):
    """Where alerts are sent: an email (SMTP) or a JSON webhook (Slack-compatible text)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,39}$")
    type: Literal["email", "webhook"]
    # email
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, gt=0, lt=65536)
    starttls: bool = False
    sender: str | None = None
    recipients: list[str] = Field(default_factory=list)
    # webhook
    url: str | None = Field(default=None, pattern=r"^https?://")
    # credentials (names of environment variables)
    username_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN)
    password_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN)
    token_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN)
    # which alerts, and how
    diseases: list[str] = Field(default_factory=list)
    """Only these diseases (empty: all)."""
    org_units: list[str] = Field(default_factory=list)
    """Only alerts in these org units' subtrees (UIDs; empty: everywhere)."""
    mode: Literal["immediate", "digest"] = "immediate"
    min_severity: Literal["alert", "epidemic"] = "alert"

    @model_validator(mode="after")
    def _check_target(self) -> NotificationChannel:
        if self.type == "email" and not (self.smtp_host and self.sender and self.recipients):
            raise ValueError("an email channel needs smtp_host, sender and recipients")
        if self.type == "webhook" and not self.url:
            raise ValueError("a webhook channel needs url")
        return self

    def credential_env_names(self) -> dict[str, str]:
        keys = ("username_env", "password_env", "token_env")
        return {key: value for key in keys if (value := getattr(self, key)) is not None}


class HealthpipeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    warehouse: str = DEFAULT_WAREHOUSE
    pseudonym_key_env: str = Field(default="HEALTHPIPE_PSEUDONYM_KEY", pattern=ENV_NAME_PATTERN)
    indicator_paths: list[Path] = Field(default_factory=list)
    sources: list[SourceConfig]
    notifications: list[NotificationChannel] = Field(default_factory=list)
    alert_rules: Path | None = None
    """A YAML file of alert rules replacing the built-in IDSR rules (pipelines/alerts/rules.yml)."""
    state_dir: Path = Path("var")
    """Where run-time state goes: dbt's target and logs, Data Docs, the demo's data."""
    small_cell_threshold: int = Field(default=5, ge=1)
    """The public layer (marts.pub_*) masks counts from 1 to this minus 1; 1 masks nothing."""

    # Set by the loader, not by the file.
    config_path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _unique_source_names(self) -> HealthpipeConfig:
        names = [source.name for source in self.sources]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"source names must be unique; repeated: {', '.join(duplicated)}")
        return self

    def source(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources) or "none"
        raise ConfigError(f"{self.origin}: no source named {name!r} (configured: {known})")

    @property
    def origin(self) -> str:
        return str(self.config_path) if self.config_path else "healthpipe config"


def _location(loc: tuple[int | str, ...]) -> str:
    """('sources', 0, 'type') -> 'sources[0].type'."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "(top level)"


def _describe(error: Mapping[str, Any], model_fields: dict[str, list[str]]) -> str:
    loc = tuple(error["loc"])
    # Drop pydantic's internal union tags (e.g. function-after[...]) from the location.
    loc = tuple(p for p in loc if not (isinstance(p, str) and "[" in p))
    where = _location(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = next((p for p in ("sources", "notifications") if p in loc[:-1]), "")
        allowed = ", ".join(model_fields.get(parent, []))
        return f"{where}: unknown key (allowed here: {allowed})"
    if kind == "missing":
        return f"{where}: required key is missing"
    if kind == "literal_error":
        return f"{where}: {error['msg'].lower()}, got {error.get('input')!r}"
    message = str(error["msg"])
    message = message.removeprefix("Value error, ")
    if "input" in error and kind not in ("value_error",):
        return f"{where}: {message}, got {error['input']!r}"
    return f"{where}: {message}"


def parse_config(
    data: Any,
    *,
    origin: str,
    base_dir: Path,
    env: Mapping[str, str] | None = None,
    check_credentials: bool = True,
    config_path: Path | None = None,
) -> HealthpipeConfig:
    """Validate an already-parsed YAML document. Paths resolve from ``base_dir``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{origin}: expected a mapping of keys at the top level")
    if "config_path" in data:
        raise ConfigError(f"{origin}: config_path: unknown key")
    model_fields = {
        "": sorted(HealthpipeConfig.model_fields.keys() - {"config_path"}),
        "sources": list(SourceConfig.model_fields),
        "notifications": list(NotificationChannel.model_fields),
    }
    try:
        config = HealthpipeConfig.model_validate(dict(data))
    except ValidationError as exc:
        lines = [_describe(error, model_fields) for error in exc.errors()]
        raise ConfigError(f"{origin}: " + f"\n{origin}: ".join(lines)) from None

    resolved_sources = [
        source.model_copy(update={"path": _resolve(base_dir, source.path)})
        if source.path is not None
        else source
        for source in config.sources
    ]
    config = config.model_copy(
        update={
            "sources": resolved_sources,
            "indicator_paths": [_resolve(base_dir, p) for p in config.indicator_paths],
            "state_dir": _resolve(base_dir, config.state_dir),
            "alert_rules": _resolve(base_dir, config.alert_rules) if config.alert_rules else None,
            "warehouse": _resolve_warehouse_url(config.warehouse, base_dir),
            "config_path": config_path,
        }
    )
    environment = os.environ if env is None else env
    override = environment.get(WAREHOUSE_ENV)
    if override:
        config = config.model_copy(
            update={"warehouse": _resolve_warehouse_url(override, Path.cwd())}
        )
    if check_credentials:
        missing = [
            f"{origin}: sources[{index}].{key}: environment variable {name} is not set"
            for index, source in enumerate(config.sources)
            if source.enabled
            for key, name in source.credential_env_names().items()
            if not environment.get(name)
        ]
        missing += [
            f"{origin}: notifications[{index}].{key}: environment variable {name} is not set"
            for index, channel in enumerate(config.notifications)
            for key, name in channel.credential_env_names().items()
            if not environment.get(name)
        ]
        if missing:
            raise ConfigError("\n".join(missing))
    return config


def _resolve(base_dir: Path, path: Path) -> Path:
    return path if path.is_absolute() else (base_dir / path)


def _resolve_warehouse_url(url: str, base_dir: Path) -> str:
    """Relative DuckDB files resolve from ``base_dir`` (SQLAlchemy's form: three slashes
    then a relative path, four slashes then an absolute one)."""
    prefix = "duckdb:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        relative = url[len(prefix) :]
        if relative and relative != ":memory:":
            return prefix + str((base_dir / relative).resolve())
    return url


def load_config(
    path: Path | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    check_credentials: bool = True,
) -> HealthpipeConfig:
    """Load ``healthpipe.yml`` (or ``$HEALTHPIPE_CONFIG``, or the given file)."""
    environment = os.environ if env is None else env
    config_path = Path(path or environment.get(CONFIG_ENV) or "healthpipe.yml")
    origin = str(config_path)
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{origin}: config file not found (pass --config FILE or set {CONFIG_ENV})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{origin}: cannot read the config file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{origin}: not valid YAML{where}: {problem}") from None
    return parse_config(
        data,
        origin=origin,
        base_dir=config_path.resolve().parent,
        env=environment,
        check_credentials=check_credentials,
        config_path=config_path,
    )
