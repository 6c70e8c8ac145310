"""The matrix file of `harness ci`: rows with their defaults, expectations
judged as the table says, and every bad file refused with one line naming
the file, the row and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import matrix
from harness.matrix import Expectation, MatrixError

GOOD = """
[defaults]
nodes = 3
time_limit = 4
seeds = 2
[defaults.system]
gossip_interval = 0.2

[[row]]
name = "valid"
nemesis = "partition,kill"
system = { resolution = "dvv" }
expect = "valid"

[[row]]
name = "found"
check = ["linearizable"]
seeds = [7, 9]
system = { resolution = "lww", w = 1, r = 1 }
expect = { linearizable = { verdict = "invalid", anomalies = ["nonlinearizable"] }, stats = "any" }

[[row]]
name = "etcd"
system = "etcd"
backend = "netns"
expect = "valid"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.toml"
    path.write_text(text)
    return path


def test_rows_take_their_defaults_and_override_them(tmp_path: Path) -> None:
    m = matrix.load(write(tmp_path, GOOD))
    valid, found, etcd = m.rows
    assert valid.run["nodes"] == 3 and valid.run["nemesis"] == ("partition", "kill")
    assert valid.run["system_options"] == {"gossip_interval": 0.2, "resolution": "dvv"}
    assert valid.seeds == (1, 2) and not valid.must_be_found
    assert found.seeds == (7, 9) and found.must_be_found and found.run["check"] == ("linearizable",)
    assert found.checkers["linearizable"] == Expectation("invalid", ("nonlinearizable",))
    assert etcd.run["system"] == "etcd" and etcd.run["system_options"] == {}, "a name replaces the options"
    assert [r.name for r in m.only(["found"]).rows] == ["found"]


def test_the_command_line_overrides_seeds_and_picks_a_backend(tmp_path: Path) -> None:
    m = matrix.load(write(tmp_path, GOOD), seeds=5, backend="local")
    assert [r.name for r in m.rows] == ["valid", "found"]
    assert all(r.seeds == tuple(range(1, 6)) for r in m.rows)
    assert [r.name for r in matrix.load(write(tmp_path, GOOD), backend="netns").rows] == ["etcd"]


def test_a_row_on_several_backends_is_a_row_per_backend(tmp_path: Path) -> None:
    text = '[defaults]\nbackend = "local"\n[[row]]\nname = "r"\nbackends = ["local", "netns"]\nexpect = "valid"\n'
    m = matrix.load(write(tmp_path, text))
    assert [(r.name, r.run["backend"]) for r in m.rows] == [("r@local", "local"), ("r@netns", "netns")]
    assert [r.name for r in matrix.load(write(tmp_path, text), backend="netns").rows] == ["r@netns"]
    with pytest.raises(MatrixError, match="no row runs on the docker backend"):
        matrix.load(write(tmp_path, text), backend="docker")


@pytest.mark.parametrize(("overall", "verdicts", "anomalies", "met"), [
    (True, {"linearizable": False}, {"linearizable": {"nonlinearizable"}}, True),
    (False, {"linearizable": False}, {"linearizable": set()}, False),  # the anomaly type must appear
    (True, {"linearizable": True}, {}, False),
    (True, {"linearizable": "unknown"}, {}, False),
])
def test_a_must_be_found_row_needs_its_anomaly(tmp_path: Path, overall: object, verdicts: dict[str, object],
                                               anomalies: dict[str, set[str]], met: bool) -> None:
    found = matrix.load(write(tmp_path, GOOD)).rows[1]
    assert found.met(overall, verdicts, anomalies) is met


def test_a_valid_row_needs_every_checker_valid(tmp_path: Path) -> None:
    valid = matrix.load(write(tmp_path, GOOD)).rows[0]
    assert valid.met(True, {"siblings": True, "stats": True}, {})
    assert not valid.met("unknown", {"siblings": "unknown"}, {})


@pytest.mark.parametrize(("text", "says"), [
    ('[[row]]\nname = "a"\nexpect = "valid"\nnodez = 3\n', "m.toml: row a: unknown key 'nodez'"),
    ('[[row]]\nname = "a"\nexpect = "maybe"\n', "m.toml: row a: expect: 'maybe' is not one of valid, invalid, any"),
    ('[[row]]\nname = "a"\n', "m.toml: row a: expect: missing"),
    ('[[row]]\nname = "a"\nexpect = "valid"\nnodes = "five"\n', "m.toml: row a: nodes: a whole number >= 1"),
    ('[[row]]\nname = "a"\nexpect = "valid"\ntime_limit = -1\n', "m.toml: row a: time_limit: a positive number"),
    ('[[row]]\nname = "a"\nexpect = "valid"\nseeds = 0\n', "m.toml: row a: seeds: a count >= 1"),
    ('[[row]]\nname = "a"\nexpect = "valid"\nsystem = { w = 9 }\n', "m.toml: row a: "),
    ('[[row]]\nname = "a"\nexpect = "valid"\nsystem = { colour = 1 }\n', "m.toml: row a: kvnode has no option 'colour'"),
    ('[[row]]\nname = "a"\nexpect = "valid"\nnemesis = ["earthquake"]\n', "m.toml: row a: "),
    ('[[row]]\nname = "a"\nexpect = { linearizable = { verdict = "valid", anomalies = ["x"] } }\n',
     "m.toml: row a: expect.linearizable.anomalies: only an invalid verdict has anomalies"),
    ('[[row]]\nname = "a"\nexpect = "valid"\n[[row]]\nname = "a"\nexpect = "valid"\n',
     "m.toml: row a: name: 'a' is used by another row"),
    ('[defaults]\nnodes = 3\n', "m.toml: no rows"),
    ('[rows]\n', "m.toml: unknown top-level key 'rows'"),
    ('[[row]]\nname = "a"\nexpect = "valid"\nbackend = "local"\nbackends = ["netns"]\n',
     "m.toml: row a: backends: give backend or backends, not both"),
    ('[[row]]\nname = "a"\nexpect = "valid"\nnemesis_options = { kill_targets = "most" }\n', "m.toml: row a: "),
    ('[[row]\n', "m.toml: not valid TOML"),
])
def test_a_bad_file_is_one_line_naming_file_row_and_key(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(MatrixError) as e:
        matrix.load(write(tmp_path, text))
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / says.split(": ", 1)[0])) and says.split(": ", 1)[1] in message


def test_an_unknown_row_for_only(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match="no row named 'nope'"):
        matrix.load(write(tmp_path, GOOD)).only(["nope"])
