"""The node image of the `docker` backend, built offline: `harness docker build`.

Two layers, each cached on the Docker engine of this machine:

1. **The base**, a minimal Debian root file system: `debootstrap
   --variant=minbase bookworm` with python3, python3-venv, iptables, iproute2,
   procps and ca-certificates, from the Debian mirror this host's apt already
   uses (no registry needed), tarred and imported as
   `dynamo-harness-base:bookworm`. Cached by that tag: it is built once per
   machine (one to two minutes) and never again unless removed. `--base-image IMG`
   uses a local image of the user's instead; it must have python3 with venv,
   iptables and iproute2 (tc).
2. **The node layer**: a `Dockerfile` on that base that copies this
   project's wheelhouse (`harness.backends.wheels.wheelhouse`: the project's
   wheel and the node's dependencies, the vendored `libfaketime.so.1`
   included) into `/opt/harness/wheels`, creates the virtual environment
   `/opt/harness/venv` and installs from the wheels with `pip --no-index`.
   A last step checks, with the harness's own libfaketime probe run inside
   the image, that the vendored library works there, and links it to
   `/opt/harness/libfaketime.so.1` (or writes why not to
   `/opt/harness/libfaketime.missing`, which the backend reports).

The cache key of the node layer (label `dynamo-harness.image-key`) is a
digest of the project's sources, the base image's id and the Dockerfile's
text: an image with that label is returned at once without building
anything, so a second build with no change takes about a second. When
only the sources changed, the engine's own layer cache keeps the venv with
the dependencies (they are copied and installed before the project's wheel),
and the build takes seconds after the wheelhouse. The newest three node
images are kept; older ones are untagged (and so deleted) after a build.

The image is never pulled or pushed: everything comes from this machine,
the Debian mirror and (for the wheels, once per source digest) PyPI.

    built = build_image()                  # BuiltImage(tag=..., id=..., reused=...)
    built = build_image(base_image="debian-with-python:12")
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.backends.wheels import PROJECT, install_commands, source_digest, wheelhouse

__all__ = ["BASE_TAG", "DEFAULT_TAG", "VENV", "BuiltImage", "build_base", "build_image", "main"]

SUITE = "bookworm"
BASE_TAG = f"dynamo-harness-base:{SUITE}"
DEFAULT_TAG = "dynamo-harness-node"
BASE_PACKAGES = ("python3", "python3-venv", "iptables", "iproute2", "procps", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
MIRROR_VAR = "HARNESS_DEBIAN_MIRROR"  # overrides the mirror read from apt's sources

OPT = "/opt/harness"
VENV = f"{OPT}/venv"
WHEELS = f"{OPT}/wheels"
FAKETIME_LINK = f"{OPT}/libfaketime.so.1"
FAKETIME_MISSING = f"{OPT}/libfaketime.missing"
DEPENDENCIES_DIR, PROJECT_DIR = "dependencies", "project"  # in the build context

KEY_LABEL = "dynamo-harness.image-key"
KEEP = 3  # node images kept per repository (the newest)
SOURCE_LABEL = "dynamo-harness.source"
BASE_LABEL = "dynamo-harness.base"

Progress = Callable[[str], None]

# Imported root file systems carry no environment; these are what every
# Debian image sets.
_IMPORT_CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["/bin/bash"]',
]

# Run by the image's own Python at build time: the same probe the local
# backend uses, so a library that would crash the node is never preloaded.
_LINK_FAKETIME = f"""
import os
from harness.backends.faketime import find_libfaketime, libfaketime_missing_reason
library = find_libfaketime()
if library is None:
    with open({FAKETIME_MISSING!r}, "w") as f:
        f.write(libfaketime_missing_reason())
else:
    os.symlink(library.resolve(), {FAKETIME_LINK!r})
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class BuiltImage:
    """What `build_image` made or found."""

    tag: str  # "dynamo-harness-node:<key>"; also tagged "<tag>:latest"
    id: str  # "sha256:..."
    key: str  # the cache key (label dynamo-harness.image-key)
    reused: bool  # True: an image with this key existed, nothing was built
    base: str  # the base image it is built on
    base_reused: bool  # False only when the debootstrap base was made by this call
    seconds: float

    def __str__(self) -> str:
        return self.tag


def _engine() -> Any:
    """A Docker SDK client, or RuntimeError saying that no engine answers."""
    import docker  # the SDK is imported lazily: only the docker backend needs it

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as e:
        raise RuntimeError(f"no Docker engine answers ({e}); start one (as root: "
                           "`(setsid dockerd >/var/log/dockerd.log 2>&1 &)`)") from None
    return client


def _local_image(client: Any, name: str) -> Any | None:
    import docker

    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        return None


# -- the base ---------------------------------------------------------------


def debian_mirror(sources: Sequence[Path] | None = None) -> str:
    """The Debian mirror this host's apt uses for `bookworm` (one-line and
    deb822 sources both), `$HARNESS_DEBIAN_MIRROR` if set, else deb.debian.org."""
    if os.environ.get(MIRROR_VAR):
        return os.environ[MIRROR_VAR]
    if sources is None:
        sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        found = _mirror_in(text, deb822=path.suffix == ".sources")
        if found:
            return found
    return DEFAULT_MIRROR


def _mirror_in(text: str, *, deb822: bool) -> str | None:
    if deb822:
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
            if ("deb" in fields.get("types", "").split() and SUITE in fields.get("suites", "").split()
                    and fields.get("uris")):
                return fields["uris"].split()[0]
        return None
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
            return words[1]
    return None


def _rootfs_filter(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Leave out what a container gets from the engine (/dev, /proc, /sys
    contents) and apt's caches, which only make the image larger."""
    name = info.name.removeprefix("./")
    for skipped in ("dev/", "proc/", "sys/", "var/cache/apt/", "var/lib/apt/lists/", "debootstrap/"):
        if name.startswith(skipped):
            return None
    return info


def build_base(client: Any, *, tag: str = BASE_TAG, mirror: str | None = None,
               progress: Progress = print) -> Any:
    """Make the base image with debootstrap and import it as `tag`; returns
    the SDK's image. Needs root (debootstrap does) and the Debian mirror."""
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (apt-get install debootstrap), "
                           "or give a local base image with --base-image")
    if os.geteuid() != 0:
        raise RuntimeError("debootstrap needs root; run as root or give --base-image")
    mirror = mirror or debian_mirror()
    # /var/tmp is on disk where /tmp may be memory: the tree and its tar take ~500 MB.
    scratch = "/var/tmp" if os.path.isdir("/var/tmp") else None
    with tempfile.TemporaryDirectory(prefix="harness-rootfs-", dir=scratch) as tmp:
        root = Path(tmp) / "rootfs"
        argv = ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                SUITE, str(root), mirror]
        progress(f"base: {' '.join(argv)} (one to two minutes)")
        started = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = root / "debootstrap" / "debootstrap.log"
            detail = log.read_text()[-2000:] if log.exists() else (done.stderr or done.stdout)[-2000:]
            raise RuntimeError(f"debootstrap failed (exit {done.returncode}): {detail}")
        progress(f"base: debootstrap done in {time.monotonic() - started:.0f} s; importing")
        # A tar file, not a pipe: the SDK streams a file path given to
        # `import_image` from disk to the engine (a stream of our own would be
        # read into memory), and Python's tarfile keeps owners, modes, device
        # nodes and hard links, which is all `docker import` needs.
        archive = Path(tmp) / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(root, arcname=".", filter=_rootfs_filter)
        repository, _, name = tag.rpartition(":") if ":" in tag else (tag, "", "latest")
        started = time.monotonic()
        client.api.import_image(src=str(archive), repository=repository, tag=name, changes=_IMPORT_CHANGES)
        progress(f"base: imported as {tag} in {time.monotonic() - started:.0f} s")
    image = _local_image(client, tag)
    if image is None:
        raise RuntimeError(f"docker import did not leave an image tagged {tag}")
    return image


# -- the node layer -----------------------------------------------------------


def dockerfile(base: str) -> str:
    """The node layer's Dockerfile on `base` (exec-form RUN lines: no shell
    quoting anywhere)."""
    venv, dependencies, project = install_commands("python3", VENV, WHEELS)
    lines = [
        f"FROM {base}",
        # No index is reachable: don't let pip try to look for itself.
        "ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1",
        # The dependencies before the project: when only the project changed,
        # the engine's layer cache keeps the venv and its dependencies.
        f"COPY {DEPENDENCIES_DIR} {WHEELS}",
        f"RUN {json.dumps(venv)}",
        f"RUN {json.dumps(dependencies)}",
        f"COPY {PROJECT_DIR} {WHEELS}",
        f"RUN {json.dumps(project)}",
        f"RUN {json.dumps([f'{VENV}/bin/python', '-c', _LINK_FAKETIME])}",
    ]
    return "\n".join(lines) + "\n"


def image_key(source: str, base_id: str, text: str) -> str:
    """The node layer's cache key: what it is made of (the sources, the
    base image's id, the Dockerfile), digested."""
    h = hashlib.sha256()
    for part in (source, base_id, text):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _find_keyed(client: Any, key: str) -> Any | None:
    found = client.images.list(filters={"label": f"{KEY_LABEL}={key}"})
    return found[0] if found else None


def build_image(*, base_image: str | None = None, tag: str = DEFAULT_TAG,
                progress: Progress = print, client: Any = None) -> BuiltImage:
    """The node image for the current sources, built if needed.

    `base_image`: a local image to build on (default: the debootstrap base,
    made once). `tag`: the repository name; the image is tagged
    `<tag>:<key>` and `<tag>:latest`. Returns at once with `reused=True` when
    an image with the same cache key exists. Raises RuntimeError with the
    reason (no engine, no root for debootstrap, a failed step's output)."""
    started = time.monotonic()
    client = client or _engine()
    base_reused = True
    if base_image is not None:
        base = _local_image(client, base_image)
        if base is None:
            raise RuntimeError(f"--base-image {base_image}: no such image on this engine "
                               "(it is never pulled: load or build it first)")
        base_name = base_image
    else:
        base_name = BASE_TAG
        base = _local_image(client, BASE_TAG)
        if base is None:
            base = build_base(client, progress=progress)
            base_reused = False
    text = dockerfile(base_name)
    source = source_digest()
    key = image_key(source, base.id, text)
    repository = tag.split(":", 1)[0]
    keyed = f"{repository}:{key}"

    def result(image: Any, reused: bool) -> BuiltImage:
        image.tag(repository, "latest")
        return BuiltImage(tag=keyed, id=image.id, key=key, reused=reused, base=base_name,
                          base_reused=base_reused, seconds=time.monotonic() - started)

    existing = _find_keyed(client, key)
    if existing is not None:
        existing.tag(repository, key)
        progress(f"image: {keyed} is up to date ({existing.short_id})")
        return result(existing, True)

    progress(f"image: building {keyed} on {base_name} (sources {source})")
    wheels = wheelhouse()
    with tempfile.TemporaryDirectory(prefix="harness-image-") as tmp:
        context = Path(tmp)
        _split_wheels(wheels, context)
        (context / "Dockerfile").write_text(text)
        labels = {KEY_LABEL: key, SOURCE_LABEL: source, BASE_LABEL: base.id}
        image_id = _run_build(client, context, keyed, labels, progress)
    image = client.images.get(image_id)
    progress(f"image: built {keyed} ({image.short_id}) in {time.monotonic() - started:.0f} s")
    built = result(image, False)
    _prune(client, repository, progress)
    return built


def _prune(client: Any, repository: str, progress: Progress) -> None:
    """Untag all but the newest KEEP node images of `repository` (one per
    source change would pile up), so the engine deletes them; an image that
    a container still uses stays (the engine refuses, and we let it)."""
    import docker

    ours = [image for image in client.images.list(filters={"label": KEY_LABEL})
            if any(t.startswith(repository + ":") for t in image.tags)]
    ours.sort(key=lambda image: str(image.attrs.get("Created", "")), reverse=True)
    for image in ours[KEEP:]:
        for tag in image.tags:
            if tag.startswith(repository + ":"):
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(tag)
        progress(f"image: removed the older {', '.join(image.tags) or image.short_id}")


def _split_wheels(wheels: Path, context: Path) -> None:
    """The wheelhouse into the build context: the project's wheel in one
    directory, its dependencies' in another (see `dockerfile`)."""
    prefix = PROJECT.replace("-", "_") + "-"
    for sub in (DEPENDENCIES_DIR, PROJECT_DIR):
        (context / sub).mkdir()
    for wheel in sorted(wheels.glob("*.whl")):
        sub = PROJECT_DIR if wheel.name.startswith(prefix) else DEPENDENCIES_DIR
        shutil.copy2(wheel, context / sub / wheel.name)


def _run_build(client: Any, context: Path, tag: str, labels: dict[str, str], progress: Progress) -> str:
    """`docker build` through the SDK's low-level API, so that each step's
    output can be shown as it comes; returns the image id."""
    image_id: str | None = None
    tail: list[str] = []
    for chunk in client.api.build(path=str(context), tag=tag, labels=labels, rm=True, forcerm=True,
                                  pull=False, decode=True):
        if "error" in chunk:
            raise RuntimeError(f"docker build failed: {chunk['error'].strip()}\n{''.join(tail[-20:])}")
        text = chunk.get("stream", "")
        if text:
            tail.append(text)
            if text.startswith("Step "):
                progress(f"image: {text.strip()[:160]}")
            elif "Using cache" in text:
                progress("image:   (cached layer)")
        aux = chunk.get("aux")
        if isinstance(aux, dict) and "ID" in aux:
            image_id = str(aux["ID"])
    if image_id is None:
        for text in reversed(tail):
            match = re.match(r"Successfully built ([0-9a-f]+)", text)
            if match:
                image_id = match.group(1)
                break
    if image_id is None:
        raise RuntimeError(f"docker build gave no image id:\n{''.join(tail[-20:])}")
    return image_id


# -- command line -------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """`harness docker build [--base-image IMG] [--tag T]`: 0 when the image
    is there, 255 with the reason when it cannot be built."""
    parser = argparse.ArgumentParser(prog="harness docker build",
                                     description="Build (or find cached) the docker backend's node image.")
    parser.add_argument("--base-image", default=None,
                        help="a local image to build on (default: a debootstrap bookworm base, built once)")
    parser.add_argument("--tag", default=DEFAULT_TAG, help="the image's repository name")
    args = parser.parse_args(argv)
    try:
        built = build_image(base_image=args.base_image, tag=args.tag)
    except RuntimeError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 255
    print(f"{built.tag} {built.id} ({'cached' if built.reused else 'built'}, {built.seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
