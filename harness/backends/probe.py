"""Can this machine do what a backend needs? Each probe tries the thing
once (in this process) and says why not, rather than judging by being
root: in a container, root may lack the capabilities to make a network
namespace or to let Docker apply an image's layers.

Each function returns "" when the capability works, else one sentence that
says what failed and what to do. The backends refuse a run with it (a
`ConfigError`, so `harness ci` skips the row with the reason), and the tests
skip with it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import shutil
import subprocess
import sys
import tarfile


def _run(argv: list[str], timeout: float = 20.0) -> tuple[int, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 1, str(e)
    return done.returncode, (done.stderr or done.stdout).strip()


@functools.cache
def netns_problem() -> str:
    """Network namespaces, a veth pair and iptables inside a namespace."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt install iproute2 iptables)"
    name = f"dh-probe-{os.getpid()}"
    code, err = _run(["ip", "netns", "add", name])
    if code != 0:
        return f"cannot make a network namespace here (`ip netns add` says: {err}); run as root with CAP_SYS_ADMIN"
    try:
        code, err = _run(["ip", "netns", "exec", name, "ip", "link", "add", "dh-a", "type", "veth", "peer",
                          "name", "dh-b"])
        if code != 0:
            return f"cannot make a veth pair in a network namespace ({err})"
        code, err = _run(["ip", "netns", "exec", name, "iptables", "-w", "-L", "-n"])
        if code != 0:
            return f"iptables does not work in a network namespace ({err}); it needs CAP_NET_ADMIN"
    finally:
        _run(["ip", "netns", "delete", name])
    return ""


@functools.cache
def docker_problem() -> str:
    """A Docker engine that answers and can import an image (apply its
    layer): what the docker backend's offline image build needs."""
    try:
        import docker
    except ImportError:
        return "the docker Python package is not installed"
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as e:
        return f"no Docker engine answers ({type(e).__name__}: {e}); start dockerd"
    tag = f"dynamo-harness-probe:{os.getpid()}"
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        data = b"probe\n"
        info = tarfile.TarInfo("probe")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    try:
        client.api.import_image_from_data(layer.getvalue(), repository=tag.split(":")[0], tag=tag.split(":")[1])
        client.images.get(tag)
    except Exception as e:
        return f"the Docker engine cannot import an image here ({type(e).__name__}: {e})"
    finally:
        with contextlib.suppress(Exception):  # nothing was made
            client.images.remove(tag, force=True)
        client.close()
    return ""
