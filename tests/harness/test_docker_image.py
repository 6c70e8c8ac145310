"""The docker backend's node image (`harness.backends.image`): which Debian
mirror the base comes from and what the Dockerfile installs (no engine
needed), then, with an engine and root, the real build: built once per
session (the base once per machine), a second build reuses it without
building anything, and the image runs the node with its libfaketime."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.backends import image as image_module
from harness.backends.image import (
    FAKETIME_LINK,
    KEY_LABEL,
    VENV,
    BuiltImage,
    build_image,
    debian_mirror,
    dockerfile,
)
from harness.backends.probe import docker_problem


def unusable() -> str:
    """Why the docker tests cannot run here ("" if they can)."""
    if os.geteuid() != 0:
        return "needs root (debootstrap builds the base image; the tests add iptables rules in containers)"
    return docker_problem()


UNUSABLE = unusable()


# -- without an engine --------------------------------------------------------


def test_the_mirror_is_the_one_apt_uses_for_bookworm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_DEBIAN_MIRROR", raising=False)
    one_line = tmp_path / "sources.list"
    one_line.write_text("# comment\ndeb [arch=amd64] http://mirror.example/debian bookworm main\n")
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb\nURIs: http://other.example/debian-security\nSuites: bookworm-security\n\n"
                      "Types: deb\nURIs: http://other.example/debian\nSuites: bookworm bookworm-updates\n")
    assert debian_mirror([one_line]) == "http://mirror.example/debian"
    assert debian_mirror([deb822]) == "http://other.example/debian"
    assert debian_mirror([tmp_path / "missing.list"]) == "http://deb.debian.org/debian"
    monkeypatch.setenv("HARNESS_DEBIAN_MIRROR", "http://local/debian")
    assert debian_mirror([one_line]) == "http://local/debian"


def test_the_dockerfile_installs_only_from_the_wheels_dependencies_first() -> None:
    text = dockerfile("some-base:1")
    lines = text.splitlines()
    assert lines[0] == "FROM some-base:1"
    runs = [line for line in lines if line.startswith("RUN ")]
    assert all("--no-index" in line for line in runs if "pip" in line and "install" in line)
    # the project's wheel comes after its dependencies, so that a change of
    # the sources reuses the engine's cached venv layer
    assert text.index("COPY dependencies") < text.index("COPY project")
    assert f"{VENV}/bin/python" in runs[-1] and "find_libfaketime" in runs[-1]


# -- with an engine -------------------------------------------------------------


@pytest.fixture(scope="module")
def built() -> Iterator[BuiltImage]:
    """The node image, built once (on this machine, usually found cached).
    The sources' digest is read once for the module: "no change" must not
    depend on nobody editing the working tree meanwhile."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(image_module, "source_digest", functools.cache(image_module.source_digest))
        yield build_image(progress=lambda line: None)


@pytest.mark.docker
@pytest.mark.skipif(bool(UNUSABLE), reason=UNUSABLE)
def test_a_second_build_with_no_change_reuses_the_image(built: BuiltImage) -> None:
    said: list[str] = []
    again = build_image(progress=said.append)
    assert again.reused and again.base_reused, said
    assert (again.id, again.tag, again.key) == (built.id, built.tag, built.key)
    assert not any("Step " in line for line in said), said  # nothing was built


@pytest.mark.docker
@pytest.mark.skipif(bool(UNUSABLE), reason=UNUSABLE)
def test_the_image_runs_the_node_and_carries_its_cache_key(built: BuiltImage) -> None:
    import docker

    client = docker.from_env()
    image = client.images.get(built.tag)
    assert image.labels[KEY_LABEL] == built.key
    output = client.containers.run(
        built.tag, ["sh", "-c", f'{VENV}/bin/python -m kvnode --help && test -e "$0" && echo faketime-ok',
                    FAKETIME_LINK],
        remove=True, labels={"dynamo-harness": "1"},
    )
    text = output.decode()
    assert "serve" in text and "faketime-ok" in text, text


@pytest.mark.docker
@pytest.mark.skipif(bool(UNUSABLE), reason=UNUSABLE)
def test_harness_docker_build_says_it_found_the_image_cached(built: BuiltImage) -> None:
    import subprocess
    import sys

    got = subprocess.run([sys.executable, "-m", "harness", "docker", "build"], capture_output=True, text=True,
                         timeout=600)
    assert got.returncode == 0, got.stderr
    tag, image_id, state = got.stdout.split()[:3]
    assert tag.startswith("dynamo-harness-node") and image_id.startswith("sha256:")
    # the module's fixture built it from these same sources: the CLI finds it
    assert state == "(cached,", got.stdout
