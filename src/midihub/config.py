"""Configuration: a TOML file, or the legacy ``midiports`` JSON, validated with pydantic.

Every problem is reported at once, each naming the field (and the line, where the
file format lets us find it), so an admin fixes a file in one pass.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from midihub.hub.spec import EndpointSpec, FleetSpec, HubSpec, LinkSpec, redact_url
from midihub.rtp.limits import Limits, unmapped

DEFAULT_GROUPS: dict[str, tuple[int, int]] = {"GroupOne": (5040, 5042), "GroupTwo": (5050, 5052)}
SEARCH_PATHS = ("midihub.toml", "midiports")


class ConfigError(Exception):
    """A configuration that cannot be used; ``problems`` lists every reason."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def _check_port(port: int) -> int:
    # Parity is checked with the other cross-port rules, so one pass reports them all.
    if not 1 <= port <= 65534:
        raise ValueError(f"port {port} is outside 1..65534")
    return port


RecordMode = Literal["off", "auto"]


class _Strict(BaseModel):
    # strict: "yes" is not a boolean nor "30" a number (TOML has types; a whole number
    # for a float, timeout = 30, is still a number).
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)


class _PortOptions(_Strict):
    """What a group and a room both let an admin choose."""

    record: RecordMode = Field(default="off", description="auto: record while anyone plays")
    journal: bool = Field(default=True, description="recovery journals to its peers")
    browser: bool = Field(default=False, description="browsers may join from /play")
    key: str | None = Field(
        default=None, min_length=4, max_length=128, description="browsers need it (the link has it)"
    )
    release_after: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="seconds: after a loss from a sender without recovery journals, release"
        " a note it held then and still holds this long after (off when unset)",
    )


class GroupConfig(_PortOptions):
    """What arrives on ``in`` goes out to everyone on ``out``."""

    in_port: int = Field(alias="in")
    out_port: int = Field(alias="out")

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            if len(value) != 2:
                raise ValueError("a group is [in, out]: exactly two ports")
            return {"in": value[0], "out": value[1]}
        if not isinstance(value, dict):
            raise ValueError(f"a group is [in, out] or a table, not {_as_written(value)}")
        return value

    _ports = field_validator("in_port", "out_port")(_check_port)


class RoomConfig(_PortOptions):
    """One port; everyone hears everyone else, never their own echo."""

    port: int

    @model_validator(mode="before")
    @classmethod
    def _from_port(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"port": value}
        if not isinstance(value, dict):
            raise ValueError(f"a room is a port number or a table, not {_as_written(value)}")
        return value

    _port = field_validator("port")(_check_port)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (also IPv4-mapped) or ``localhost``."""
    host = host.lower().removeprefix("[").removesuffix("]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return unmapped(address).is_loopback


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) → (host, port), or ValueError saying why."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:8080, got {text!r}")
    return host, int(port_text)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def proxy_network(text: str) -> IPNetwork:
    """An address (``127.0.0.1``, ``::1``) or a network (``10.0.0.0/8``), or ValueError
    saying what is wrong with it."""
    cleaned = text.strip().removeprefix("[").removesuffix("]")
    try:
        return ipaddress.ip_network(cleaned)
    except ValueError:
        pass
    try:
        network = ipaddress.ip_network(cleaned, strict=False)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an IP address or network (write 127.0.0.1, ::1 or 10.0.0.0/8)"
        ) from None
    raise ValueError(f"{text!r} has bits set past its prefix length; did you mean {network}?")


class WebConfig(_Strict):
    """The dashboard and JSON API."""

    listen: str = Field(default="127.0.0.1:8080", description="HOST:PORT; empty turns it off")
    token: str | None = Field(
        default=None, min_length=8, description="for control actions; generated when unset"
    )
    public: bool | None = Field(
        default=None,
        description="read-only pages need no token; unset: only when listening on loopback",
    )
    hosts: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="names (or IPs) the dashboard answers to besides loopback (DNS rebinding)",
    )
    tls_cert: str | None = Field(default=None, description="PEM certificate chain: serve HTTPS")
    tls_key: str | None = Field(default=None, description="PEM private key for tls_cert")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For or"
        " Forwarded header names the client",
    )
    connections_per_ip: int = Field(
        default=64, ge=1, le=65536, description="open connections per client IP (IPv6: per /64)"
    )
    max_connections: int = Field(
        default=4096,
        ge=16,
        le=65536,
        description="open connections in all (lower when the open-file limit says so)",
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        le=10.0,
        description="seconds for a connection to send its request head (or to idle)",
    )
    monitor_viewers: int = Field(default=64, ge=1, le=4096, description="monitor streams, all")
    monitor_viewers_per_ip: int = Field(
        default=8, ge=1, le=4096, description="monitor streams per client IP (IPv6: per /64)"
    )
    max_browser_per_port: int = Field(
        default=16, ge=1, le=1024, description="browser participants on one port"
    )
    browser_per_ip: int = Field(
        default=8, ge=1, le=4096, description="browser connections per client IP (IPv6: per /64)"
    )
    browser_rate: float = Field(
        default=200.0, gt=0, description="MIDI messages/s one browser may send (sustained)"
    )
    browser_burst: int = Field(default=400, ge=1, description="MIDI messages in a burst")
    browser_max_frame: int = Field(
        default=4096, ge=64, le=1 << 20, description="bytes of one WebSocket message"
    )
    browser_queue: int = Field(
        default=256, ge=8, le=65536, description="frames a slow browser may have waiting"
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if value:
            parse_listen(value)
        return value

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        cleaned = []
        for host in value:
            name = host.strip().lower().removeprefix("[").removesuffix("]")
            if not name or not re.fullmatch(r"[a-z0-9.:_-]{1,253}", name):
                raise ValueError(f"{host!r} is not a host name or IP address")
            cleaned.append(name)
        return cleaned

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: list[str]) -> list[str]:
        return [str(network) for network in map(proxy_network, value)]

    @model_validator(mode="after")
    def _tls_pair(self) -> WebConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        return self

    @property
    def pages_public(self) -> bool:
        """``public`` as set, else True only when the web port listens on loopback."""
        if self.public is not None:
            return self.public
        if not self.listen:
            return True
        return is_loopback(parse_listen(self.listen)[0])

    @property
    def proxy_networks(self) -> tuple[IPNetwork, ...]:
        """``trusted_proxies`` as networks (validated: this cannot fail)."""
        return tuple(ipaddress.ip_network(text) for text in self.trusted_proxies)


class LinkConfig(_Strict):
    """A remote RTP MIDI endpoint (another hub, a device) the hub invites and joins to
    one of its ports, reconnecting with back-off whenever it goes away."""

    remote: str = Field(description="HOST:PORT of the remote's control port")
    port: int = Field(description="the hub port (group in/out or room) the link joins")
    name: str | None = Field(default=None, max_length=63, description="label in logs")
    journal: bool = Field(default=True, description="recovery journals to the remote")

    @field_validator("remote")
    @classmethod
    def _remote(cls, value: str) -> str:
        parse_listen(value)
        return value

    _port = field_validator("port")(_check_port)

    @property
    def address(self) -> tuple[str, int]:
        return parse_listen(self.remote)

    @property
    def label(self) -> str:
        return self.name or self.remote

    def spec(self) -> LinkSpec:
        host, port = self.address
        return LinkSpec(self.remote, host, port, self.port, self.name, self.journal)


class MdnsConfig(_Strict):
    """Bonjour advertisement of every port as ``_apple-midi._udp``."""

    enabled: bool | Literal["auto"] = Field(
        default="auto", description="auto: only when bound to a LAN or loopback address"
    )

    @field_validator("enabled", mode="before")
    @classmethod
    def _enabled(cls, value: Any) -> Any:
        if value is True or value is False or value == "auto":
            return value  # one message for the union, not one per member
        raise ValueError(f'expected true, false or "auto", not {_as_written(value)}')


class StatsConfig(_Strict):
    """Latency history."""

    database: str = Field(default="midihub.db", description="SQLite file, or :memory:")
    retention_days: float = Field(default=7.0, gt=0)


FLEET_SCHEMES = ("postgresql", "postgres")
MAX_DOWN_BOUND = 30.0
"""Seconds: a hub that stops renewing shows down everywhere within down_after + heartbeat."""


class FleetConfig(_Strict):
    """A fleet of hubs sharing one PostgreSQL database (the directory, latency history).
    Leave the password out of the URL and give it to libpq instead (PGPASSWORD, or a
    ~/.pgpass file): docs/security.md."""

    database: str = Field(description="postgresql://user@host:port/dbname")
    name: str = Field(description="this hub's name, unique in the fleet")
    address: str = Field(description="host name or IP the other hubs reach this hub's ports at")
    heartbeat: float = Field(default=5.0, ge=0.1, le=10.0, description="seconds between renewals")
    down_after: float = Field(
        default=15.0, gt=0, le=MAX_DOWN_BOUND, description="seconds without renewal: shown down"
    )
    expire_after: float = Field(
        default=600.0, gt=0, le=7 * 86400, description="seconds without renewal: rows deleted"
    )

    @field_validator("database")
    @classmethod
    def _database(cls, value: str) -> str:
        from urllib.parse import urlsplit

        shown = redact_url(value)  # a problem line never repeats the password
        if not value.isprintable() or any(c.isspace() for c in value):
            raise ValueError(f"{shown}: a URL has no spaces or control characters")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as error:
            raise ValueError(f"{shown}: not a database URL ({error})") from None
        if parts.scheme not in FLEET_SCHEMES:
            raise ValueError(
                f"{shown}: expected a postgresql://user@host:port/dbname URL"
                f" (scheme {parts.scheme or 'missing'!r})"
            )
        if not parts.hostname and "host=" not in parts.query:
            raise ValueError(f"{shown}: the URL names no host")
        if parts.path.strip("/") == "":
            raise ValueError(f"{shown}: the URL names no database (…/dbname)")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", value):
            raise ValueError(
                f"{_as_written(value)} is not a hub name: 1-63 letters, digits, '.', '_' or "
                "'-', starting with a letter or digit"
            )
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        name = value.strip().removeprefix("[").removesuffix("]")
        if name.count(":") == 1 or not re.fullmatch(r"[A-Za-z0-9.:_-]{1,253}", name):
            raise ValueError(
                f"{_as_written(value)} is not a host name or IP address (no port: the other "
                "hubs use this hub's room and group ports)"
            )
        return name

    @model_validator(mode="after")
    def _timers(self) -> FleetConfig:
        if self.down_after < 2 * self.heartbeat:
            raise ValueError(
                f"down_after ({self.down_after:g} s) must be at least twice heartbeat "
                f"({self.heartbeat:g} s): one late renewal must not mark a hub down"
            )
        if self.down_after + self.heartbeat > MAX_DOWN_BOUND:
            raise ValueError(
                f"down_after + heartbeat ({self.down_after + self.heartbeat:g} s) must be at "
                f"most {MAX_DOWN_BOUND:g} s: the bound within which a dead hub shows down"
            )
        if self.expire_after < self.down_after:
            raise ValueError(
                f"expire_after ({self.expire_after:g} s) must be at least down_after "
                f"({self.down_after:g} s)"
            )
        return self

    def __repr_args__(self) -> Any:  # never the password (logs, tracebacks)
        for key, value in super().__repr_args__():
            yield key, redact_url(value) if key == "database" else value

    def spec(self) -> FleetSpec:
        return FleetSpec(
            self.database,
            self.name,
            self.address,
            self.heartbeat,
            self.down_after,
            self.expire_after,
        )


class LimitsConfig(_Strict):
    """What one stranger may cost each port (docs/security.md)."""

    max_pending: int = Field(default=128, ge=1, le=1024, description="half-open sessions per port")
    pending_per_source: int = Field(default=4, ge=1, description="half-open sessions per IP")
    sessions_per_source: int = Field(default=16, ge=1, description="sessions per IP per port")
    handshake_timeout: float = Field(
        default=5.0, gt=0, le=60, description="seconds from IN to a proven address"
    )
    proof_intervals: int = Field(
        default=3, ge=1, description="clock-sync intervals without an answer before MIDI stops"
    )
    max_sysex: int = Field(default=65536, ge=16, description="bytes of one SysEx message")
    sysex_rate: float = Field(default=65536.0, gt=0, description="SysEx bytes/s per participant")
    reject_rate: float = Field(default=2.0, gt=0, description="NO replies per second per IP")

    def spec(self) -> Limits:
        return Limits(
            max_pending=self.max_pending,
            pending_per_source=self.pending_per_source,
            sessions_per_source=self.sessions_per_source,
            handshake_timeout=self.handshake_timeout,
            proof_intervals=self.proof_intervals,
            max_sysex=self.max_sysex,
            sysex_rate=self.sysex_rate,
            reject_rate=self.reject_rate,
        )


class RecordConfig(_Strict):
    """Recordings (Standard MIDI Files): where, how long they are kept, auto splits."""

    dir: str | None = Field(default=None, description="default: recordings/ beside the database")
    retention_days: float = Field(default=30.0, gt=0)
    max_total_mb: float = Field(default=2000.0, gt=0, description="oldest deleted beyond this")
    max_recording_mb: float = Field(
        default=200.0, gt=0, description="one recording stops at this size (a stranger's flood)"
    )
    split_after: float = Field(default=5.0, gt=0, description="auto: minutes of silence")
    flush_interval: float = Field(default=1.0, gt=0, le=2.0, description="seconds")
    buffer_limit: int = Field(default=100_000, ge=100, description="messages awaiting disk")
    max_tracks: int = Field(default=128, ge=1, le=1024, description="players per recording")


class HubConfig(_Strict):
    bind: str = "0.0.0.0"
    name: str = Field(default="midihub", min_length=1, max_length=63)
    timeout: float = Field(default=30.0, gt=0, description="seconds of silence before a drop")
    ck_interval: float = Field(default=10.0, gt=0, description="seconds between clock syncs")
    max_participants: int = Field(default=64, ge=1, le=1024, description="per port")
    journal: bool = Field(default=True, description="send RFC 6295 recovery journals")
    journal_off: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="session-name patterns (fnmatch, any case) that get no journal",
    )
    groups: dict[str, GroupConfig] = Field(default_factory=dict)
    rooms: dict[str, RoomConfig] = Field(default_factory=dict)
    web: WebConfig = Field(default_factory=WebConfig)
    stats: StatsConfig = Field(default_factory=StatsConfig)
    links: list[LinkConfig] = Field(default_factory=list)
    mdns: MdnsConfig = Field(default_factory=MdnsConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    record: RecordConfig = Field(default_factory=RecordConfig)
    fleet: FleetConfig | None = Field(default=None, description="a fleet of hubs (PostgreSQL)")

    def with_overrides(self, *, web: str | None = None, db: str | None = None) -> HubConfig:
        """Command-line options win over the file (``--web``, ``--db``)."""
        config = self
        if web is not None:
            parse_listen(web)
            config = config.model_copy(
                update={"web": config.web.model_copy(update={"listen": web})}
            )
        if db is not None:
            stats = config.stats.model_copy(update={"database": db})
            config = config.model_copy(update={"stats": stats})
        return config

    @model_validator(mode="after")
    def _defaults(self) -> HubConfig:
        if not self.groups and not self.rooms:
            groups = {
                k: GroupConfig.model_validate({"in": a, "out": b})
                for k, (a, b) in DEFAULT_GROUPS.items()
            }
            object.__setattr__(self, "groups", groups)
        return self

    def endpoints(self) -> list[EndpointSpec]:
        """Every port pair the hub listens on, with its role."""
        specs: list[EndpointSpec] = []
        for name, group in self.groups.items():
            for port, role in ((group.in_port, "in"), (group.out_port, "out")):
                specs.append(
                    EndpointSpec(
                        port,
                        name,
                        role,  # type: ignore[arg-type]
                        journal=group.journal,
                        record=group.record,
                        browser=group.browser,
                        key=group.key,
                        release_after=group.release_after,
                    )
                )
        for name, room in self.rooms.items():
            specs.append(
                EndpointSpec(
                    room.port,
                    name,
                    "room",
                    journal=room.journal,
                    record=room.record,
                    browser=room.browser,
                    key=room.key,
                    release_after=room.release_after,
                )
            )
        return specs

    def spec(self) -> HubSpec:
        """What the hub and the socket layer take: plain frozen values."""
        return HubSpec(
            name=self.name,
            bind=self.bind,
            timeout=self.timeout,
            ck_interval=self.ck_interval,
            journal=self.journal,
            journal_off=tuple(self.journal_off),
            max_participants=self.max_participants,
            limits=self.limits.spec(),
            endpoints=tuple(self.endpoints()),
            links=tuple(link.spec() for link in self.links),
        )

    def fleet_spec(self) -> FleetSpec | None:
        """The fleet this hub joins, or None (no ``[fleet]``: no database, no network)."""
        return self.fleet.spec() if self.fleet is not None else None


def parse(text: str, source: str = "<config>", bind: str | None = None) -> HubConfig:
    """Parse TOML or legacy JSON (told apart by content) and check everything."""
    stripped = text.lstrip()
    raw: dict[str, Any]
    if stripped.startswith("{"):
        raw, problems = _parse_legacy_json(text, source)
    else:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(source, [f"TOML syntax: {error}"]) from None
        problems = []
    if bind is not None:
        raw["bind"] = bind
    try:
        config = HubConfig.model_validate(raw)
    except ValidationError as error:
        problems += sorted((_describe(err, text) for err in error.errors()), key=_line_number)
        raise ConfigError(source, problems) from None
    problems += _cross_check(config, text)
    if problems:
        raise ConfigError(source, problems)
    return config


def load(path: str | Path | None, bind: str | None = None) -> tuple[HubConfig, Path | None]:
    """Load ``path``; with None, the first of ./midihub.toml, ./midiports, else defaults."""
    if path is None:
        for candidate in SEARCH_PATHS:
            if Path(candidate).is_file():
                path = candidate
                break
        else:
            return parse("", "<defaults>", bind), None
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(str(file), [f"cannot read: {error.strerror or error}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(file), ["not UTF-8 text"]) from None
    return parse(text, str(file), bind), file


def _parse_legacy_json(text: str, source: str) -> tuple[dict[str, Any], list[str]]:
    """The old hub's ``midiports``: ``{"GroupOne": [5040, 5042], ...}`` and nothing else."""
    problems: list[str] = []

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                problems.append(f"{key}: name used twice")
            seen[key] = value
        return seen

    try:
        data = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as error:
        raise ConfigError(source, [f"JSON syntax: line {error.lineno}: {error.msg}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(source, ["legacy JSON must be an object of name: [in, out]"])
    return {"groups": data}, problems


def _describe(error: Any, text: str) -> str:
    loc = [str(part) for part in error["loc"]]
    # Pydantic names the alias for table fields; in/out of a pair read better as such.
    line = _line_of(text, loc)
    if error["type"] == "extra_forbidden":
        place = ".".join(loc[:-1])
        return f"{line}{place + ': ' if place else ''}{_unknown(loc)}"
    field = ".".join(loc) or "(top level)"
    return f"{line}{field}: {_in_words(error)}"


# What pydantic says of a value of the wrong type, in a configuration's words.
EXPECTED = {
    "bool_type": "true or false",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "string_type": "text in quotes",
    "dict_type": "a table",
    "model_type": "a table",
    "list_type": "an array [...]",
}


def _in_words(error: Any) -> str:
    value = error.get("input")
    if error["type"] in EXPECTED:
        return f"expected {EXPECTED[error['type']]}, not {_as_written(value)}"
    if error["type"] == "missing":
        return "missing: this option is required here"
    message = str(error["msg"]).removeprefix("Value error, ")
    subject, _, rest = message.partition(" should ")
    if subject in ("Input", "String", "List", "Dictionary") and rest:
        message = "should " + rest.replace(" after validation", "")
        if isinstance(value, str | int | float):
            message += f", not {_as_written(value)}"
    return message


def _as_written(value: Any) -> str:
    """A value as the TOML file spells it (a string in quotes, true, 3.5)."""
    if isinstance(value, str | bool | int | float):
        return json.dumps(value)
    return "a table" if isinstance(value, dict) else "an array" if isinstance(value, list) else "?"


def _unknown(loc: list[str]) -> str:
    """``unknown option 'kye' (did you mean 'key'?)``: the closest name the table has."""
    name, options = loc[-1], _options_at(loc[:-1])
    close = difflib.get_close_matches(name, options, n=1)
    if close:
        return f"unknown option {name!r} (did you mean {close[0]!r}?)"
    if options:
        return f"unknown option {name!r}; the options here: {', '.join(sorted(options))}"
    return f"unknown option {name!r}"


def _options_at(path: list[str]) -> list[str]:
    """The names a table at ``path`` takes (aliases where they have one, ``in``/``out``)."""
    kind: Any = HubConfig
    for part in path:
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            field = kind.model_fields.get(part) or next(
                (f for f in kind.model_fields.values() if f.alias == part), None
            )
            if field is None:
                return []
            kind = field.annotation
        elif get_origin(kind) in (dict, list):  # a group's or room's name, a link's index
            kind = get_args(kind)[-1]
        else:
            return []
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return [field.alias or name for name, field in kind.model_fields.items()]
    return []


def _line_number(problem: str) -> int:
    """Where a problem is in the file, to list them top to bottom (no line: at the end)."""
    found = re.match(r"line (\d+): ", problem)
    return int(found.group(1)) if found else 1 << 30


def _line_of(text: str, loc: list[str]) -> str:
    """Best effort: the line where the innermost named key is defined."""
    names = [part for part in loc if not part.isdigit() and part not in ("in_port", "out_port")]
    if not names or not text:
        return ""
    pattern = re.compile(
        r"""^\s*[{,]?\s*(\[\[?([\w.]*\.)?)?["']?""" + re.escape(names[-1]) + r"""["']?\s*[=:\]]"""
    )
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return f"line {number}: "
    return ""


def _cross_check(config: HubConfig, text: str) -> list[str]:
    problems: list[str] = []
    owners: dict[int, str] = {}
    for spec in config.endpoints():
        field = _field_of(spec)
        where = _line_of(text, [spec.owner])
        if spec.port % 2:
            problems.append(
                f"{where}{field}: port {spec.port} is odd; an RTP MIDI control port must be "
                "even (its data port is the next one)"
            )
        if spec.port in owners:
            problems.append(
                f"{where}{field}: port {spec.port} is already used by {owners[spec.port]}"
            )
            continue
        for neighbour in (spec.port - 1, spec.port + 1):
            if neighbour in owners:
                problems.append(
                    f"{where}{field}: ports {spec.port}-{spec.port + 1} overlap "
                    f"{owners[neighbour]} ({neighbour}-{neighbour + 1})"
                )
        owners[spec.port] = field
    seen_links: set[tuple[str, int, int]] = set()
    for index, link in enumerate(config.links):
        where = _line_of(text, ["remote"]) if len(config.links) == 1 else ""
        if link.port not in owners:
            problems.append(
                f"{where}links.{index}.port: {link.port} is not one of the hub's ports "
                f"({', '.join(str(p) for p in sorted(owners)) or 'none'})"
            )
        key = (*link.address, link.port)
        if key in seen_links:
            problems.append(f"{where}links.{index}: {link.remote} is linked to {link.port} twice")
        seen_links.add(key)
    shared = set(config.groups) & set(config.rooms)
    for name in sorted(shared):
        problems.append(f"rooms.{name}: name {name!r} is also a group; names must be unique")
    return problems


def _field_of(spec: EndpointSpec) -> str:
    if spec.role == "room":
        return f"rooms.{spec.owner}"
    return f"groups.{spec.owner}.{spec.role}"
