"""Peer authentication (`kvnode.auth`): the secret, the mutual HMAC proofs,
client tokens.

`handshake` below plays the flow of the `kvnode.auth` module docstring step by
step with the pure functions, without sockets: it is the executable version of
what the server and the connection implement around hello/challenge/auth/hello_ok.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvnode import auth
from kvnode.auth import (
    AuthConfigError,
    Transcript,
    check_token,
    load_secret,
    make_challenge,
    prove,
    verify,
)

SECRET = b"correct horse battery staple"


class Refused(Exception):
    pass


def handshake(
    client_secret: bytes | None,
    server_secret: bytes | None,
    *,
    cluster: str = "c1",
    client: str = "n2",
    server: str = "n1",
    tamper: Any = None,
    record: dict[str, Any] | None = None,
    impostor: bool = False,
) -> dict[str, Any]:
    """Run the handshake; return the hello_ok, or raise Refused naming the
    side that refused. `tamper(step, message)` may change a message in
    flight; `record` receives the messages as sent. An `impostor` node lets
    anyone in (it does not check step 4), hoping to get the peer's traffic."""

    def send(step: str, message: dict[str, Any]) -> dict[str, Any]:
        return tamper(step, message) if tamper else message

    # 1. hello
    hello = send("hello", {"type": "hello", "cluster": cluster, "node": client,
                           "nonce": make_challenge(), "token": None})
    if server_secret is None:
        ok = send("hello_ok", {"type": "hello_ok", "node": server, "proof": None})
    else:
        if not auth.valid_nonce(hello["nonce"]):
            raise Refused("server: bad client nonce")
        # 2. challenge
        server_nonce = make_challenge()
        challenge = send("challenge", {"type": "challenge", "node": server, "nonce": server_nonce})
        # 3. auth
        if client_secret is None:
            raise Refused("server: peer did not prove (no secret)")
        client_t = Transcript(cluster=cluster, client=client, server=challenge["node"],
                              client_nonce=hello["nonce"], server_nonce=challenge["nonce"])
        answer = send("auth", {"type": "auth", "proof": prove(client_secret, "client", client_t)})
        # 4. server verifies with its own record of the transcript
        server_t = Transcript(cluster=cluster, client=hello["node"], server=server,
                              client_nonce=hello["nonce"], server_nonce=server_nonce)
        if not impostor and not verify(server_secret, "client", server_t, answer["proof"]):
            raise Refused("server: bad proof")
        ok = send("hello_ok", {"type": "hello_ok", "node": server,
                               "proof": prove(server_secret, "server", server_t)})
        if record is not None:
            record.update(hello=hello, challenge=challenge, auth=answer, hello_ok=ok)
    # 5. the client checks the server's proof
    if client_secret is not None:
        if server_secret is None:
            raise Refused("client: node answered without a proof")
        if not verify(client_secret, "server", client_t, ok["proof"]):
            raise Refused("client: node's proof is wrong")
    return ok


def test_the_right_secret_authenticates_both_ways() -> None:
    assert handshake(SECRET, SECRET)["node"] == "n1"


def test_without_secrets_nothing_is_asked() -> None:
    assert handshake(None, None)["proof"] is None


def test_a_wrong_secret_is_refused_by_the_node() -> None:
    with pytest.raises(Refused, match="server: bad proof"):
        handshake(b"guess", SECRET)


def test_a_node_with_the_wrong_secret_is_refused_by_the_peer() -> None:
    with pytest.raises(Refused, match="client: node's proof is wrong"):
        handshake(SECRET, b"guess", impostor=True)


def test_a_missing_secret_when_one_is_required_fails_both_ways() -> None:
    with pytest.raises(Refused, match="server: peer did not prove"):
        handshake(None, SECRET)
    with pytest.raises(Refused, match="client: node answered without a proof"):
        handshake(SECRET, None)


def test_a_replayed_proof_fails_against_a_new_nonce() -> None:
    recorded: dict[str, Any] = {}
    handshake(SECRET, SECRET, record=recorded)

    def replay(step: str, message: dict[str, Any]) -> dict[str, Any]:
        if step == "hello":  # the attacker even replays the old client nonce
            return {**message, "nonce": recorded["hello"]["nonce"]}
        if step == "auth":
            return {**message, "proof": recorded["auth"]["proof"]}
        return message

    with pytest.raises(Refused, match="server: bad proof"):
        handshake(SECRET, SECRET, tamper=replay)


def test_a_replayed_node_proof_fails_against_a_new_client_nonce() -> None:
    recorded: dict[str, Any] = {}
    handshake(SECRET, SECRET, record=recorded)

    def replay(step: str, message: dict[str, Any]) -> dict[str, Any]:
        if step == "challenge":
            return {**message, "nonce": recorded["challenge"]["nonce"]}
        if step == "hello_ok":
            return {**message, "proof": recorded["hello_ok"]["proof"]}
        return message

    with pytest.raises(Refused, match="client: node's proof is wrong"):
        handshake(SECRET, b"guess", impostor=True, tamper=replay)


def test_a_short_client_nonce_is_refused() -> None:
    with pytest.raises(Refused, match="bad client nonce"):
        handshake(SECRET, SECRET, tamper=lambda step, m: {**m, "nonce": b"\x00" * 4} if step == "hello" else m)


def _transcript(**changes: Any) -> Transcript:
    t = Transcript(cluster="c1", client="n2", server="n1",
                   client_nonce=b"c" * auth.NONCE_SIZE, server_nonce=b"s" * auth.NONCE_SIZE)
    return replace(t, **changes)


def test_proofs_do_not_reflect_between_roles() -> None:
    t = _transcript()
    assert verify(SECRET, "server", t, prove(SECRET, "server", t))
    assert not verify(SECRET, "client", t, prove(SECRET, "server", t))
    assert not verify(SECRET, "server", t, prove(SECRET, "client", t))


@given(
    field=st.sampled_from(["cluster", "client", "server", "client_nonce", "server_nonce"]),
    text=st.text(max_size=8),
    nonce=st.binary(min_size=auth.NONCE_SIZE, max_size=auth.NONCE_SIZE),
)
def test_a_proof_is_bound_to_every_field(field: str, text: str, nonce: bytes) -> None:
    t = _transcript()
    value: Any = nonce if field.endswith("nonce") else text
    other = replace(t, **{field: value})
    proof = prove(SECRET, "client", t)
    assert verify(SECRET, "client", other, proof) == (other == t)


def test_fields_are_unambiguous() -> None:
    a = _transcript(client="ab", server="c")
    b = _transcript(client="a", server="bc")
    assert a.encode("client") != b.encode("client")
    assert prove(SECRET, "client", a) != prove(SECRET, "client", b)


@pytest.mark.parametrize("proof", [None, "text", b"", b"x" * 31, b"x" * 33, 12])
def test_malformed_proofs_are_false_not_errors(proof: object) -> None:
    assert verify(SECRET, "client", _transcript(), proof) is False


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        prove(b"", "client", _transcript())
    with pytest.raises(ValueError):
        prove(SECRET, "client", _transcript(server_nonce=b"short"))
    assert verify(SECRET, "client", _transcript(server_nonce=b"short"), b"x" * 32) is False
    assert verify(b"", "client", _transcript(), b"x" * 32) is False


def test_nonces_are_fresh_and_can_be_injected() -> None:
    assert len({make_challenge() for _ in range(100)}) == 100
    counter = itertools.count()
    fake = make_challenge(lambda n: bytes([next(counter) % 256]) * n)
    assert fake == b"\x00" * auth.NONCE_SIZE
    with pytest.raises(ValueError):
        make_challenge(lambda n: b"short")
    assert not auth.valid_nonce("x" * auth.NONCE_SIZE)


def test_client_tokens() -> None:
    assert check_token(None, None) and check_token(None, b"anything")
    assert check_token(b"tok", b"tok")
    assert not check_token(b"tok", None)
    assert not check_token(b"tok", b"tok2")
    assert not check_token(b"tok", "tok")


# ---------------------------------------------------------------- the secret


def test_secret_from_a_file_strips_the_newline(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVNODE_SECRET", "from-env")
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    assert load_secret(str(path)) == SECRET  # the file wins over the environment


def test_secret_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVNODE_SECRET", " s3cret\n")
    assert load_secret(None) == b"s3cret"
    monkeypatch.setenv("OTHER", "x")
    assert load_secret(None, env="OTHER") == b"x"
    monkeypatch.delenv("KVNODE_SECRET")
    assert load_secret(None) is None


def test_an_unusable_secret_is_a_clear_error(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(AuthConfigError, match=rf"cannot read the secret file {missing}"):
        load_secret(str(missing))
    with pytest.raises(AuthConfigError, match="cannot read"):
        load_secret(str(tmp_path))  # a directory
    empty = tmp_path / "empty"
    empty.write_bytes(b" \n")
    with pytest.raises(AuthConfigError, match=rf"secret file {empty} is empty"):
        load_secret(str(empty))
    monkeypatch.setenv("KVNODE_SECRET", "  ")
    with pytest.raises(AuthConfigError, match="KVNODE_SECRET is set but empty"):
        load_secret(None)


def test_schema_entries_for_the_integrator() -> None:
    assert set(auth.SCHEMA) == {"challenge", "auth"}
    assert set(auth.HELLO_FIELDS) == {"nonce", "token"}
    assert set(auth.HELLO_OK_FIELDS) == {"proof"}
