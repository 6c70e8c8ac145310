"""Node and cluster settings, from the command line or a TOML file.

Cluster settings (`ClusterSettings`) must be the same on every node of a
cluster: the harness passes them to each. Node settings (`NodeConfig`) say
who this node is, where it listens and stores, and who its peers are.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .ring import DEFAULT_PARTITIONS
from .versions import DEFAULT_MAX_SIBLINGS, RESOLUTIONS

READ_REPAIR = ("off", "async", "sync")
QUORUM = ("sloppy", "strict")


class ConfigError(ValueError):
    """A setting is missing, unknown or out of range; the message says which."""


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"bad address {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def parse_peers(text: str) -> dict[str, tuple[str, int]]:
    """`n1=127.0.0.11:7000,n2=...` -> {"n1": ("127.0.0.11", 7000), ...}"""
    peers: dict[str, tuple[str, int]] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, addr = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"bad peer {item!r}: expected ID=HOST:PORT")
        if name in peers:
            raise ConfigError(f"peer {name!r} listed twice")
        peers[name] = parse_address(addr)
    return peers


def _setting(default: Any, help: str, choices: tuple[Any, ...] | None = None) -> Any:
    """A cluster setting's default, with what it means (and its allowed
    values) for the tools that list the settings: `kvnode serve --help` and
    the harness's `harness systems kvnode`."""
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = choices
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, kw_only=True, slots=True)
class ClusterSettings:
    """The settings every node of a cluster shares: the one place their
    defaults and allowed values are written."""

    cluster: str = _setting("kvnode", "the cluster's name; peers from another cluster are refused")
    n: int = _setting(3, "replicas per key")
    w: int = _setting(2, "write quorum")
    r: int = _setting(2, "read quorum")
    resolution: str = _setting("dvv", "dvv: concurrent writes kept as siblings; lww: the latest timestamp wins",
                               RESOLUTIONS)
    quorum: str = _setting("sloppy", "sloppy: fallbacks hold hints for down primaries and count toward W/R; "
                           "strict: primaries only", QUORUM)
    read_repair: str = _setting("async", "off; async: repair stale replicas after answering; sync: write "
                                "back to W replicas before answering (ABD)", READ_REPAIR)
    partitions: int = _setting(DEFAULT_PARTITIONS, "ring partitions (a power of two)")
    request_timeout: float = _setting(2.0, "seconds a coordinator waits for its quorum")
    connect_timeout: float = _setting(0.5, "seconds to reach a peer before counting it down")
    max_siblings: int = _setting(DEFAULT_MAX_SIBLINGS, "siblings per key; a put beyond fails")
    hint_ttl: float = _setting(3600.0, "seconds a hint is kept for a node that does not come back")
    handoff_interval: float = _setting(1.0, "seconds between hint delivery rounds")
    ae_interval: float = _setting(10.0, "seconds between anti-entropy rounds; 0: only on demand")
    gossip_interval: float = _setting(1.0, "seconds between gossip rounds")
    suspect_after: float = _setting(5.0, "seconds of silence before a node is suspect")
    dead_after: float = _setting(10.0, "seconds of silence before a node is dead")

    def __post_init__(self) -> None:
        for name in ("n", "w", "r", "partitions", "max_siblings"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.w > self.n or self.r > self.n:
            raise ConfigError(f"w ({self.w}) and r ({self.r}) cannot exceed n ({self.n})")
        if self.resolution not in RESOLUTIONS:
            raise ConfigError(f"resolution must be one of {', '.join(RESOLUTIONS)}, not {self.resolution!r}")
        if self.quorum not in QUORUM:
            raise ConfigError(f"quorum must be one of {', '.join(QUORUM)}, not {self.quorum!r}")
        if self.read_repair not in READ_REPAIR:
            raise ConfigError(f"read_repair must be one of {', '.join(READ_REPAIR)}, not {self.read_repair!r}")
        if self.request_timeout <= 0 or self.connect_timeout <= 0:
            raise ConfigError("timeouts must be positive")


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """What one node lets its connections hold: the bounds that keep a
    hostile or broken client from stalling the node or filling its memory.
    Per node (not cluster-wide): each node may set its own."""

    max_inflight: int = _setting(8, "requests in flight per client connection; past it the node stops "
                                 "reading that connection until answers drain (backpressure)")
    max_rate: float = _setting(1000.0, "requests per second per client connection, on average (bursts of "
                               "max_inflight); past it the node reads that connection more slowly")
    # A node multiplexes all its replica traffic to a peer over one
    # connection, so peers need far more at once than any one client.
    max_inflight_peer: int = _setting(512, "requests in flight per peer connection")
    frame_deadline: float = _setting(10.0, "seconds a frame, once begun, may take to arrive in full; "
                                     "past it the connection is closed")
    max_buffered: int = _setting(64 << 20, "bytes of partial frames the node holds across connections; "
                                 "past it, senders of large frames wait")
    max_connections: int = _setting(1024, "connections at once; past it the longest-idle one is closed")

    def __post_init__(self) -> None:
        for name in ("max_inflight", "max_inflight_peer", "max_buffered", "max_connections"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.max_rate <= 0:
            raise ConfigError(f"max_rate must be positive, not {self.max_rate}")
        if self.frame_deadline <= 0:
            raise ConfigError(f"frame_deadline must be positive, not {self.frame_deadline}")


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeConfig:
    id: str
    listen: tuple[str, int] = ("127.0.0.1", 7000)
    data: str = "data"
    peers: dict[str, tuple[str, int]] = field(default_factory=dict)
    settings: ClusterSettings = field(default_factory=ClusterSettings)
    sync: str = "always"  # the storage engine's WAL policy; "always" for real runs
    log: str | None = None  # a file for the structured log; None: stderr
    secret_file: str | None = None  # the cluster's shared secret (else $KVNODE_SECRET); None: no peer auth
    token_file: str | None = None  # a token clients must present (else $KVNODE_CLIENT_TOKEN); None: none
    # A token for admin requests (else $KVNODE_ADMIN_TOKEN); None: the secret, or (no secret) any client.
    admin_token_file: str | None = None
    limits: Limits = field(default_factory=Limits)
    seed: int | None = None  # the node's RNG seed (gossip peer choice); None: derived from its id
    # Bytes of decoded table blocks the storage engine keeps in memory (a
    # block larger than this is not kept); 0: no cache.
    block_cache_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        if not self.id:
            raise ConfigError("a node needs an id")
        if self.peers and self.id not in self.peers:
            raise ConfigError(f"this node's id {self.id!r} is not among the peers ({', '.join(self.peers)})")
        if not isinstance(self.block_cache_bytes, int) or self.block_cache_bytes < 0:
            raise ConfigError(f"block_cache_bytes must be a whole number of bytes, 0 or more, "
                              f"not {self.block_cache_bytes!r}")

    @property
    def members(self) -> dict[str, tuple[str, int]]:
        """Every node of the cluster, this one included."""
        return {self.id: self.listen, **self.peers}


_SETTING_NAMES = {f.name for f in fields(ClusterSettings)}
_LIMIT_NAMES = {f.name for f in fields(Limits)}
_NODE_NAMES = {"id", "listen", "data", "peers", "sync", "log", "secret_file", "token_file", "admin_token_file",
               "seed", "block_cache_bytes"}


def build(values: dict[str, Any]) -> NodeConfig:
    """A NodeConfig from flat keys, as in a TOML file or the CLI flags
    (`listen` and `peers` in their text forms)."""
    unknown = sorted(set(values) - _SETTING_NAMES - _NODE_NAMES - _LIMIT_NAMES)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    node: dict[str, Any] = {k: v for k, v in values.items() if k in _NODE_NAMES and v is not None}
    if "listen" in node and isinstance(node["listen"], str):
        node["listen"] = parse_address(node["listen"])
    if "peers" in node and isinstance(node["peers"], str):
        node["peers"] = parse_peers(node["peers"])
    elif "peers" in node and isinstance(node["peers"], dict):
        node["peers"] = {k: parse_address(v) for k, v in node["peers"].items()}
    settings = {k: v for k, v in values.items() if k in _SETTING_NAMES and v is not None}
    limits = {k: v for k, v in values.items() if k in _LIMIT_NAMES and v is not None}
    if not node.get("id"):
        raise ConfigError("a node needs an id (--id, or id = ... in the config file)")
    try:
        return NodeConfig(**node, settings=ClusterSettings(**settings), limits=Limits(**limits))
    except TypeError as e:
        raise ConfigError(str(e)) from None


def load_toml(path: str, overrides: dict[str, Any] | None = None) -> NodeConfig:
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    return build({**values, **{k: v for k, v in (overrides or {}).items() if v is not None}})


def with_settings(config: NodeConfig, **changes: Any) -> NodeConfig:
    return replace(config, settings=replace(config.settings, **changes))
