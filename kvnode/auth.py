"""Peer authentication: a mutual HMAC-SHA256 challenge-response in the
connection handshake, and optional client tokens. Pure functions, no I/O
(except `load_secret`, which reads the secret once at start-up).

Nodes of one cluster share a secret (a file, or the `KVNODE_SECRET`
environment variable). A connection that claims to be a peer (its `hello`
names a node) must prove it knows the secret; the node proves it back, so a
peer never sends replica traffic to an impostor either. Clients (`node` is
None) do not hold the cluster secret; a node may instead require them to
present a token.

The handshake, with a secret configured on the node (S) and the connecting
side (C); every message keeps the `id` of the `hello`:

1. C -> S  `hello` {version, cluster, node: C's id or None, nonce: client_nonce,
   token: bytes or None}. `client_nonce` is `make_challenge()`, fresh per
   connection. S checks version and cluster as before. If S has no secret,
   it skips to step 4 (no proof in `hello_ok`). If `node` is None (a client):
   S checks `check_token(client_token, hello.token)` and goes to step 4 with
   no proof. Otherwise S requires `valid_nonce(client_nonce)`.
2. S -> C  `challenge` {node: S's id, nonce: server_nonce}, server_nonce =
   `make_challenge()`, fresh per connection, kept by S for this connection.
3. C -> S  `auth` {proof: prove(secret, "client", t)} with the transcript
   t = Transcript(cluster, client=C's id, server=S's id, client_nonce,
   server_nonce). (If C expected another node id than the challenge names,
   it closes.)
4. S verifies: `verify(secret, "client", t, proof)`. If false: S logs
   `refused_peer` (reason `bad_proof`, the claimed node, the address),
   answers `error` code `unauthorized` and closes. If true (or no auth was
   needed): S -> C `hello_ok` {version, cluster, node, proof:
   prove(secret, "server", t) or None}.
5. C, if it has a secret, checks `verify(secret, "server", t, hello_ok.proof)`
   and closes the connection (raising an error) if it is false or missing.
   Only then does C send requests.

A node with a secret refuses a peer `hello` from a side without one (step 3
never comes, or comes with a wrong proof), and a side with a secret refuses a
node that answers `hello_ok` without a proof: one cluster is either all
authenticated or not at all.

Why this resists replay and reflection: C's proof covers server_nonce, fresh
from S for this connection, so a proof recorded from an earlier handshake
fails against a new nonce; S's proof covers client_nonce, fresh from C, so
the same holds the other way. The role label ("client"/"server") is inside
the MAC, so S's proof can never be played back to S as a client proof, and
the cluster and both node ids are inside it, so a proof made for one pair of
nodes does not serve for another. The fields are length-prefixed, so no two
different transcripts MAC the same bytes. S reveals its proof only after C
proved itself, so S is no oracle for strangers.

Who may send what (the roles `grant` gives a connection; `protocol.ACCESS`
says which requests each role may send):

- client: the client token was presented (anyone, on a node without one);
  naming a node in `hello` never stands in for it.
- peer: with a secret, only the proof of step 3. Without a secret nothing
  can tell a peer from a program that names one, so a node with neither a
  secret nor any token trusts its network (a test cluster on loopback) and
  takes a connection that names a node for a peer. A node that has a client
  or admin token but no secret, and has peers, refuses to start
  (`check_config`): its tokens would protect nothing, since peer requests
  read, write and reshape the ring.
- admin (join, leave, anti-entropy rounds): the admin token (a file, or
  `KVNODE_ADMIN_TOKEN`), or the proved secret. A node with neither has no
  way to tell an operator from anyone else and lets its clients in.

What it does not do: it authenticates the handshake, not the bytes after it
(there is no encryption and no per-message MAC). An active man in the middle
can relay a handshake and then tamper with the stream; against that, run the
cluster on a network you trust or put TLS underneath.

Randomness: nonces come from `os.urandom` (a `random_bytes` argument lets a
test or simulation pass its own). This is the one deliberate exception to
"randomness only from `kvnode.rng`": a nonce must be unpredictable to an
attacker, and a seeded, reproducible generator is exactly what it must not be.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "NONCE_SIZE",
    "SCHEMA",
    "AuthConfigError",
    "Credentials",
    "Role",
    "Transcript",
    "check_config",
    "check_token",
    "grant",
    "load_secret",
    "make_challenge",
    "prove",
    "valid_nonce",
    "verify",
]

NONCE_SIZE = 32
PROOF_SIZE = hashlib.sha256().digest_size
Role = Literal["client", "server"]
_LABEL = b"kvnode-auth-v1"

_BYTES = (bytes,)
_OPT_BYTES = (bytes, type(None))
_STR = (str,)

# Message types and fields to merge into `protocol.SCHEMA`: the new messages
# `challenge` and `auth`, and the fields `hello` and `hello_ok` gain (None
# when authentication is off for that side).
SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "challenge": {"node": _STR, "nonce": _BYTES},
    "auth": {"proof": _BYTES},
}
HELLO_FIELDS: dict[str, tuple[type, ...]] = {"nonce": _OPT_BYTES, "token": _OPT_BYTES}
HELLO_OK_FIELDS: dict[str, tuple[type, ...]] = {"proof": _OPT_BYTES}


class AuthConfigError(ValueError):
    """The secret (or token) is configured but cannot be used; the message
    says where it was looked for and what is wrong."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Transcript:
    """What both proofs of one handshake bind: the cluster, who connects
    (`client`: its node id, "" for a client without one), who answers
    (`server`), and both fresh nonces."""

    cluster: str
    client: str
    server: str
    client_nonce: bytes
    server_nonce: bytes

    def encode(self, role: Role) -> bytes:
        """The exact bytes MACed for `role`: each field length-prefixed."""
        parts = (
            _LABEL,
            role.encode(),
            self.cluster.encode("utf-8"),
            self.client.encode("utf-8"),
            self.server.encode("utf-8"),
            self.client_nonce,
            self.server_nonce,
        )
        return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def load_secret(path: str | None, env: str = "KVNODE_SECRET") -> bytes | None:
    """The cluster secret: the contents of `path` if given (surrounding
    whitespace, such as a trailing newline, stripped), else the value of the
    environment variable `env`, else None (authentication off).

    Called once at start-up. Raises AuthConfigError for a file that cannot be
    read or is empty, or a variable that is set but empty: a misconfigured
    secret must stop the node, never silently turn authentication off."""
    if path is not None:
        try:
            with open(path, "rb") as f:
                secret = f.read().strip()
        except OSError as e:
            raise AuthConfigError(f"cannot read the secret file {path}: {e.strerror or e}") from None
        if not secret:
            raise AuthConfigError(f"the secret file {path} is empty")
        return secret
    value = os.environ.get(env)
    if value is None:
        return None
    secret = value.strip().encode("utf-8")
    if not secret:
        raise AuthConfigError(f"the environment variable {env} is set but empty")
    return secret


def make_challenge(random_bytes: Callable[[int], bytes] = os.urandom) -> bytes:
    """A fresh nonce of NONCE_SIZE bytes; one per handshake and side, never
    reused (see the module docstring for why `os.urandom`)."""
    nonce = random_bytes(NONCE_SIZE)
    if not valid_nonce(nonce):
        raise ValueError(f"random_bytes returned {len(nonce)} bytes, not {NONCE_SIZE}")
    return nonce


def valid_nonce(nonce: object) -> bool:
    """Whether `nonce` (as received) is bytes of the right size. A short or
    constant nonce would let a recorded proof be replayed, so a node refuses
    a `hello` whose nonce is not valid."""
    return isinstance(nonce, bytes) and len(nonce) == NONCE_SIZE


def prove(secret: bytes, role: Role, transcript: Transcript) -> bytes:
    """The proof that `role`'s side knows `secret`: HMAC-SHA256(secret,
    transcript.encode(role)). Raises ValueError for an empty secret or a
    nonce of the wrong size."""
    if not secret:
        raise ValueError("an empty secret proves nothing")
    if role not in ("client", "server"):
        raise ValueError(f"role must be 'client' or 'server', not {role!r}")
    if not (valid_nonce(transcript.client_nonce) and valid_nonce(transcript.server_nonce)):
        raise ValueError(f"both nonces must be {NONCE_SIZE} bytes")
    return hmac.new(secret, transcript.encode(role), hashlib.sha256).digest()


def verify(secret: bytes, role: Role, transcript: Transcript, proof: object) -> bool:
    """Whether `proof` (as received: any type) is `role`'s proof for this
    transcript, compared in constant time. False, never an exception, for
    a missing or malformed proof or a malformed transcript."""
    if not isinstance(proof, bytes) or len(proof) != PROOF_SIZE:
        return False
    try:
        expected = prove(secret, role, transcript)
    except ValueError:
        return False
    return hmac.compare_digest(expected, proof)


def check_token(expected: bytes | None, presented: object) -> bool:
    """Whether a client may in: True when no token is required (`expected` is
    None); otherwise `presented` must be bytes equal to it (constant time)."""
    if expected is None:
        return True
    if not isinstance(presented, bytes):
        return False
    return hmac.compare_digest(expected, presented)


@dataclass(frozen=True, kw_only=True, slots=True)
class Credentials:
    """What a node requires: the cluster secret, the client token and the
    admin token (each None when not configured)."""

    secret: bytes | None = None
    client_token: bytes | None = None
    admin_token: bytes | None = None

    @property
    def open(self) -> bool:
        """Nothing configured: the node trusts its network."""
        return self.secret is None and self.client_token is None and self.admin_token is None


def check_config(credentials: Credentials, *, has_peers: bool) -> None:
    """Raises AuthConfigError for tokens that would protect nothing: a
    client or admin token without a secret on a node that has peers (any
    connection naming a peer could then send peer requests)."""
    if has_peers and credentials.secret is None and not credentials.open:
        which = "client token" if credentials.client_token is not None else "admin token"
        raise AuthConfigError(
            f"a {which} without a cluster secret protects nothing on a node with peers "
            "(a connection that names a peer could send peer requests): set --secret-file too")


def grant(credentials: Credentials, *, node: str | None, proved: bool, token: object) -> frozenset[str]:
    """The roles ("client", "peer", "admin") of a connection whose `hello`
    named `node` (None: a client) and presented `token`; `proved`: it gave
    the secret proof of the handshake. Empty: refuse the connection."""
    c = credentials
    roles: set[str] = set()
    if check_token(c.client_token, token):
        roles.add("client")
    if proved and c.secret is not None:
        roles |= {"peer", "admin"}
    elif node is not None and c.open:
        roles.add("peer")
    if c.admin_token is not None and check_token(c.admin_token, token):
        roles.add("admin")
    if c.secret is None and c.admin_token is None and "client" in roles:
        roles.add("admin")
    return frozenset(roles)
