"""A system's options: declared once (constructor parameters or an `Options`
dataclass), converted from text, refused with one line naming the system and
the option; and `prepare`, which checks everything before a run starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from harness.errors import ConfigError
from harness.runner import RunConfig, load_system, prepare
from harness.systems.options import REQUIRED, OptionError, construct, options_of, parse


class Plain:
    name = "plain"

    def __init__(self, replicas: int = 3, ratio: float = 0.5, fast: bool = False, mode: Literal["a", "b"] = "a",
                 label: str | None = None, *, token: str) -> None:
        if replicas < 1:
            raise ValueError("replicas must be at least 1")
        self.replicas, self.fast, self.mode, self.token = replicas, fast, mode, token


@dataclass(frozen=True)
class FancyOptions:
    depth: int = field(default=2, metadata={"help": "how deep", "choices": (1, 2, 3)})
    name: str = "x"


class Fancy:
    name = "fancy"
    Options = FancyOptions

    def __init__(self, **options: Any) -> None:
        self.options = FancyOptions(**options)


def test_options_come_from_the_constructor() -> None:
    opts = {o.name: o for o in options_of(Plain)}
    assert list(opts) == ["replicas", "ratio", "fast", "mode", "label", "token"]
    assert opts["replicas"].type is int and opts["replicas"].default == 3
    assert opts["mode"].choices == ("a", "b")
    assert opts["label"].type is str
    assert opts["token"].default is REQUIRED


def test_options_come_from_an_options_dataclass() -> None:
    (depth, name) = options_of(Fancy)
    assert (depth.name, depth.type, depth.default, depth.choices, depth.help) == ("depth", int, 2, (1, 2, 3),
                                                                                  "how deep")
    assert parse("fancy", [depth, name], {"depth": "3"}) == {"depth": 3}
    with pytest.raises(OptionError, match="fancy's option depth: '7' is not one of 1, 2, 3"):
        parse("fancy", [depth, name], {"depth": "7"})


@pytest.mark.parametrize("raw, parsed", [
    ({"replicas": "5", "token": "t"}, {"replicas": 5, "token": "t"}),
    ({"fast": "yes", "token": "t"}, {"fast": True, "token": "t"}),
    ({"fast": False, "ratio": 1, "token": "t"}, {"fast": False, "ratio": 1.0, "token": "t"}),
    ({"mode": "b", "token": "t", "label": 7}, {"mode": "b", "token": "t", "label": "7"}),
    ({"token": "t", "ratio": "2.5"}, {"token": "t", "ratio": 2.5}),
])
def test_values_convert_to_the_declared_types(raw: dict[str, Any], parsed: dict[str, Any]) -> None:
    assert parse("plain", options_of(Plain), raw) == parsed


@pytest.mark.parametrize("raw, message", [
    ({"replicas": "many", "token": "t"}, "plain's option replicas: 'many' is not an integer"),
    ({"replicas": True, "token": "t"}, "not an integer"),
    ({"fast": "perhaps", "token": "t"}, "plain's option fast: 'perhaps' is not true or false"),
    ({"mode": "c", "token": "t"}, "plain's option mode: 'c' is not one of a, b"),
    ({"size": 1, "token": "t"}, "plain has no option 'size' (its options: fast, label, mode, ratio, replicas, "
                                "token)"),
    ({}, "plain needs --set token=..."),
])
def test_bad_values_are_one_line_naming_system_and_option(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionError) as e:
        parse("plain", options_of(Plain), raw)
    assert str(e.value) == message or message in str(e.value)


def test_a_constructor_that_refuses_is_named() -> None:
    with pytest.raises(OptionError, match="plain: replicas must be at least 1"):
        construct(Plain, "plain", {"replicas": 0, "token": "t"})


def test_kvnode_options_are_its_cluster_settings() -> None:
    system, name, values = load_system("kvnode", {"n": "5", "w": "3", "resolution": "lww"})
    assert name == "kvnode" and values == {"n": 5, "w": 3, "resolution": "lww"}
    assert system.settings.n == 5  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"kvnode: w \(4\) and r \(2\) cannot exceed n \(3\)"):
        load_system("kvnode", {"w": "4"})


def test_prepare_checks_everything_before_anything_starts(tmp_path: Any) -> None:
    prepared = prepare(RunConfig(store=str(tmp_path), nodes=1, system_options={"n": 1, "w": 1, "r": 1},
                                 check=("linearizable",)))
    assert prepared.promise.names() == ("siblings", "linearizable")
    # kvnode reads each replica's own copy (ReplicaReads): its convergence is judged replica by replica.
    assert [c.name for c in prepared.plan.checks] == ["siblings", "linearizable", "replicas", "stats"]
    assert not list(tmp_path.iterdir()), "prepare touched the store"
    with pytest.raises(ConfigError, match="n=3 replicas per key need at least 3 nodes, not 1"):
        prepare(RunConfig(store=str(tmp_path), nodes=1))
    with pytest.raises(ConfigError, match="etcd has no option 'n'"):
        prepare(RunConfig(store=str(tmp_path), system="etcd", backend="netns", system_options={"n": 3}))


def test_a_run_stored_before_promises_is_checked_for_what_its_settings_promise(tmp_path: Any) -> None:
    """Old test.json files held kvnode's settings at the top level and no
    promise: the system says what they promise."""
    import json

    from harness.runner import check_run

    (tmp_path / "test.json").write_text(json.dumps({"system": "kvnode", "workload": "register", "n": 3, "w": 2,
                                                    "r": 2, "resolution": "lww", "quorum": "strict",
                                                    "read_repair": "sync", "nodes": 5, "seed": 1}))
    (tmp_path / "history.jsonl").write_text(
        '{"index":0,"time":0,"process":0,"type":"invoke","f":"write","key":"k","value":"0.1"}\n'
        '{"index":1,"time":1,"process":0,"type":"ok","f":"write","key":"k","value":"0.1"}\n')
    results, promise, not_checked = check_run(tmp_path)
    assert promise.names() == ("last-write-wins", "linearizable")
    assert [r.checker for r in results] == ["siblings", "linearizable", "stats"]
    assert "siblings" in not_checked
