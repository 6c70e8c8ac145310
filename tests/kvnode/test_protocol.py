"""Tests for kvnode.protocol: framing, the message schema, bad input."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvnode import protocol
from kvnode.protocol import (
    DEFINITE,
    LENGTH,
    MAX_FRAME,
    SCHEMA,
    ProtocolError,
    RemoteError,
    decode_body,
    encode,
    read_frame,
)

ALL_TYPES = sorted(SCHEMA)
ids = st.integers(min_value=0, max_value=2**63 - 1)

_BY_TYPE: dict[type, st.SearchStrategy[Any]] = {
    int: st.integers(min_value=-(2**63), max_value=2**64 - 1),
    str: st.text(max_size=20),
    bytes: st.binary(max_size=40),
    bool: st.booleans(),
    list: st.lists(st.binary(max_size=10), max_size=5),
    dict: st.dictionaries(st.text(max_size=5), st.integers(0, 10), max_size=3),
    type(None): st.none(),
}


def field_values(types: tuple[type, ...]) -> st.SearchStrategy[Any]:
    return st.one_of(*(_BY_TYPE[t] for t in types))


@st.composite
def messages(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    message = {"type": kind, "id": draw(ids)}
    for name, types in SCHEMA[kind].items():
        message[name] = draw(field_values(types))
    return message


def sample(kind: str, request_id: int = 42, *, last: bool = False) -> dict[str, Any]:
    """A valid message of type `kind`, each field of its first allowed type
    (or its last: None where a field may be nil)."""
    examples = {int: 1, str: "s", bytes: b"b", bool: True, list: [b"v"], dict: {"k": 1}, type(None): None}
    message: dict[str, Any] = {"type": kind, "id": request_id}
    for name, types in SCHEMA[kind].items():
        message[name] = examples[types[-1] if last else types[0]]
    return message


def body(message: Any) -> bytes:
    return msgpack.packb(message, use_bin_type=True)


def read_all(data: bytes, *, eof: bool = True) -> list[dict[str, Any] | None]:
    """Frames read from a StreamReader fed `data`, up to the end of stream."""

    async def main() -> list[dict[str, Any] | None]:
        reader = asyncio.StreamReader(limit=MAX_FRAME + 64)
        reader.feed_data(data)
        if eof:
            reader.feed_eof()
        frames: list[dict[str, Any] | None] = []
        while True:
            frame = await read_frame(reader)
            frames.append(frame)
            if frame is None:
                return frames

    # One loop for the module: a fresh `asyncio.run` per hypothesis example
    # costs more than the test.
    return _LOOP.run_until_complete(asyncio.wait_for(main(), timeout=10))


_LOOP = asyncio.new_event_loop()


@pytest.fixture(scope="module", autouse=True)
def _close_loop() -> Iterator[None]:
    yield
    _LOOP.close()


# -- round trips --------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_TYPES)
def test_every_message_type_round_trips(kind: str) -> None:
    # Each field once with its first allowed type, once with its last.
    for variant in (sample(kind), sample(kind, last=True)):
        frame = encode(variant)
        assert LENGTH.unpack(frame[: LENGTH.size]) == (len(frame) - LENGTH.size,)
        assert decode_body(frame[LENGTH.size :]) == variant
        assert read_all(frame) == [variant, None]


@given(st.sampled_from(ALL_TYPES).flatmap(messages))
def test_random_messages_round_trip(message: dict[str, Any]) -> None:
    frame = encode(message)
    assert decode_body(frame[LENGTH.size :]) == message
    assert read_all(frame) == [message, None]


def test_pipelined_frames_are_read_in_order() -> None:
    sent = [sample(kind, request_id=i) for i, kind in enumerate(ALL_TYPES)]
    assert read_all(b"".join(encode(m) for m in sent)) == [*sent, None]


def test_extra_fields_are_kept() -> None:
    status = {**sample("status_ok"), "share": 0.2, "peers": ["n1"], "counters": {"get": 3}}
    assert decode_body(body(status)) == status


def test_the_largest_frame_is_accepted() -> None:
    empty = {"type": "put", "id": 1, "key": b"k", "value": b"", "context": None}
    overhead = len(body(empty)) + 3  # a bin of 2**16 bytes or more: a 4-byte length, not 1
    message = {**empty, "value": b"x" * (MAX_FRAME - overhead)}
    frame = encode(message)
    assert len(frame) == LENGTH.size + MAX_FRAME
    assert read_all(frame) == [message, None]


# -- framing errors ----------------------------------------------------------


def test_a_frame_over_the_limit_is_refused_from_its_header() -> None:
    # The header alone decides: the reader does not wait for 16 MiB to arrive.
    with pytest.raises(ProtocolError, match="exceeds"):
        read_all(LENGTH.pack(MAX_FRAME + 1), eof=False)
    with pytest.raises(ProtocolError, match="exceeds"):
        read_all(LENGTH.pack(2**32 - 1) + b"\0" * 64)


def test_encode_refuses_a_frame_over_the_limit() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        encode({"type": "put", "id": 1, "key": b"k", "value": b"x" * MAX_FRAME, "context": None})


def test_end_of_stream_between_frames_is_clean_inside_one_is_not() -> None:
    frame = encode(sample("get"))
    assert read_all(b"") == [None]
    for cut in (1, LENGTH.size - 1, LENGTH.size, len(frame) - 1):
        with pytest.raises(ProtocolError, match="closed inside"):
            read_all(frame[:cut])


# -- bad messages --------------------------------------------------------------


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    try:
        message = decode_body(data)
    except ProtocolError:
        return
    assert message["type"] in SCHEMA


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=10) | st.binary(max_size=10),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@given(
    kind=st.sampled_from([*ALL_TYPES, "nope"]) | st.text(max_size=8) | msgpack_values,
    request_id=ids | msgpack_values,
    fields=st.dictionaries(
        st.sampled_from(sorted({f for fs in SCHEMA.values() for f in fs})) | st.text(max_size=8),
        msgpack_values,
        max_size=6,
    ),
)
def test_well_formed_but_wrong_messages_raise_only_protocol_errors(
    kind: Any, request_id: Any, fields: dict[str, Any]
) -> None:
    message = {**fields, "type": kind, "id": request_id}
    try:
        decoded = decode_body(body(message))
    except ProtocolError as e:
        valid_id = type(request_id) is int and 0 <= request_id < 2**63
        assert e.request_id == (request_id if valid_id else None)
        return
    assert decoded == message
    for name, types in SCHEMA[kind].items():
        assert isinstance(decoded[name], types)


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", body([1, 2]), body("get"), body({"type": "get", "id": 1, "key": b"k"}) + b"\0"],
)
def test_not_a_map_is_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_body(data)
    assert info.value.request_id is None


@pytest.mark.parametrize(("kind", "field"), [(k, f) for k in ALL_TYPES for f in SCHEMA[k]])
def test_a_missing_field_is_refused_with_the_request_id(kind: str, field: str) -> None:
    message = sample(kind, request_id=7)
    del message[field]
    with pytest.raises(ProtocolError, match=f"missing field '{field}'") as info:
        decode_body(body(message))
    assert info.value.request_id == 7


@pytest.mark.parametrize(("kind", "field"), [(k, f) for k in ALL_TYPES for f in SCHEMA[k]])
def test_a_field_of_the_wrong_type_is_refused_with_the_request_id(kind: str, field: str) -> None:
    types = SCHEMA[kind][field]
    wrong = [v for v in (1.5, {"a": 1}, True, 3, "s", b"b", [b"v"], None)
             if not isinstance(v, types) or (isinstance(v, bool) and bool not in types)]
    assert wrong
    for value in wrong:
        message = {**sample(kind, request_id=9), field: value}
        with pytest.raises(ProtocolError, match="wrong type") as info:
            decode_body(body(message))
        assert info.value.request_id == 9


def test_an_unknown_type_is_refused_with_the_request_id() -> None:
    for kind in ("nope", "", 5, None):
        with pytest.raises(ProtocolError, match="unknown message type") as info:
            decode_body(body({"type": kind, "id": 11}))
        assert info.value.request_id == 11


@pytest.mark.parametrize("request_id", [True, False, -1, 2**63, 1.0, "1", None, b"\x01"])
def test_an_id_must_be_a_non_negative_int_and_not_a_bool(request_id: Any) -> None:
    with pytest.raises(ProtocolError, match="integer id") as info:
        decode_body(body({"type": "status", "id": request_id}))
    assert info.value.request_id is None


def test_a_missing_id_is_refused() -> None:
    with pytest.raises(ProtocolError, match="integer id"):
        decode_body(body({"type": "status"}))


def test_bools_are_not_ints_for_int_fields_and_ints_not_bools() -> None:
    with pytest.raises(ProtocolError, match="'version' has the wrong type"):
        decode_body(body({**sample("hello"), "version": True}))
    with pytest.raises(ProtocolError, match="'definite' has the wrong type"):
        decode_body(body({**sample("error"), "definite": 1}))


# -- errors as replies ----------------------------------------------------------


def test_error_replies_say_whether_they_are_definite() -> None:
    for code, definite in DEFINITE.items():
        reply = protocol.error(5, code, "why")
        assert decode_body(body(reply)) == reply
        assert reply["definite"] is definite
        with pytest.raises(RemoteError) as info:
            protocol.raise_if_error(reply)
        assert (info.value.code, info.value.message, info.value.definite) == (code, "why", definite)
    # A code the protocol does not know is never claimed to be definite.
    assert protocol.error(5, "something_new", "why")["definite"] is False
    protocol.raise_if_error(sample("get_ok"))  # not an error: no exception
