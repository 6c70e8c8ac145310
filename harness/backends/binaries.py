"""Which programs libfaketime cannot skew, found by reading their files.

libfaketime (`harness.backends.faketime`) is preloaded into a node's process
and replaces libc's clock functions. It reaches only programs that read the
time through libc, which two kinds of program do not:

- **Go programs**, statically or dynamically linked alike: the Go runtime
  reads the clock through the vDSO itself, never through libc (Debian's
  /usr/bin/etcd is a *dynamically linked* Go binary, so "dynamically linked"
  is not enough). Found by the ELF sections the Go linker writes,
  `.go.buildinfo` and `.note.go.buildid`, or, where the section headers are
  stripped, the note segment whose owner is "Go".
- **Statically linked programs** (no `PT_INTERP` segment): nothing is
  preloaded into them at all.

`blindness(argv)` resolves `argv[0]` through PATH as `execvp` would, follows a
`#!` script to its interpreter (and `#!/usr/bin/env X` to X, as also a
command line that starts with `env`), and says why the program it ends at
cannot be skewed, or None. A program that cannot be found or read is None:
starting it fails later, with its own error.

The backends call it where their nodes run: on this machine (local, netns),
or inside a container or on a host, as

    python -m harness.backends.binaries PROGRAM [ARGS...]

which prints one JSON line, `{"program": the path resolved, "blind": the
reason or null}`, or `{"error": ...}` with exit status 1. This module imports
only the standard library and pyelftools, so that it runs where only the
node's dependencies are installed.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["REAL_CLOCK_ADVICE", "Blindness", "answer_of", "blindness", "main", "refusal"]

MAX_DEPTH = 8  # scripts run by scripts ... (the kernel allows 4 levels)
GO_SECTIONS = (".go.buildinfo", ".note.go.buildid")
GO_REASON = "a Go program: Go reads the clock without libc, so libfaketime cannot skew it"
STATIC_REASON = ("a statically linked program: nothing can be preloaded into it, so libfaketime "
                 "cannot skew it")
REAL_CLOCK_ADVICE = 'use the ssh backend with clock = "real"'


@dataclass(frozen=True, kw_only=True, slots=True)
class Blindness:
    """A program that libfaketime cannot skew, and why."""

    program: str  # the file the command line runs (argv[0] resolved)
    binary: str  # the ELF file that reads the clock (program, or the interpreter of its script)
    reason: str  # GO_REASON or STATIC_REASON

    def describe(self) -> str:
        """"/usr/bin/etcd, a Go program: ..." or "/opt/x.sh, a script run
        by /usr/bin/etcd, a Go program: ..."."""
        if self.binary == self.program:
            return f"{self.program}, {self.reason}"
        return f"{self.program}, a script run by {self.binary}, {self.reason}"


def refusal(node: str, described: str, advice: str = REAL_CLOCK_ADVICE) -> str:
    """The sentence a backend's `clock_blind` answers: "n1 runs
    /usr/bin/etcd, a Go program: ... (use the ssh backend with clock =
    "real")"."""
    return f"{node} runs {described} ({advice})"


def resolve(program: str, path: str | None = None) -> str | None:
    """`program` as `execvp` finds it: a name with a slash as it is, else
    the first executable file of that name on PATH (`path`, default this
    process's). None if there is none."""
    if "/" in program:
        return program if os.path.isfile(program) else None
    found = shutil.which(program, path=path if path is not None else os.environ.get("PATH", os.defpath))
    return found


def blindness(argv: Sequence[str], path: str | None = None) -> Blindness | None:
    """Why the program `argv` runs cannot be skewed by libfaketime, or None
    (it can, or it cannot be found or read: see the module docstring).
    `path`: the PATH it would run with (default: this process's)."""
    if not argv:
        return None
    program = resolve(str(argv[0]), path)
    if program is None:
        return None
    binary = _binary(program, list(argv[1:]), path, MAX_DEPTH)
    if binary is None:
        return None
    reason = _elf_reason(binary)
    if reason is None:
        return None
    return Blindness(program=program, binary=binary, reason=reason)


def _binary(program: str, args: list[str], path: str | None, depth: int) -> str | None:
    """The ELF file that ends up running for `program args`: through `#!`
    lines and `env`, at most `depth` steps. None if that cannot be told."""
    if depth <= 0:
        return None
    if os.path.basename(program) == "env":
        command = _env_command(args)
        if command is None:
            return program
        found = resolve(command[0], path)
        return _binary(found, command[1:], path, depth - 1) if found is not None else None
    try:
        with open(program, "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return program
    line = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    if not line:
        return None
    # The kernel passes the rest of the line as one argument; `env -S`
    # splits it again. Splitting on blanks serves both for finding the
    # interpreter.
    words = line.split(None, 1)
    interpreter, rest = words[0], (words[1].split() if len(words) > 1 else [])
    if not os.path.isfile(interpreter):
        return None
    return _binary(interpreter, rest, path, depth - 1)


def _env_command(args: Sequence[str]) -> list[str] | None:
    """The command `env ARGS` runs: after its options and NAME=VALUE
    assignments (`-S STRING` split as env does). None if none."""
    words = list(args)
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            i += 1
            break
        if word in ("-S", "--split-string"):
            return _env_command([*shlex.split(words[i + 1]), *words[i + 2:]]) if i + 1 < len(words) else None
        if word.startswith("-S") and len(word) > 2:
            return _env_command([*shlex.split(word[2:]), *words[i + 1:]])
        if word in ("-u", "--unset", "-C", "--chdir"):
            i += 2
            continue
        if word.startswith("-") or "=" in word:
            i += 1
            continue
        break
    while i < len(words) and "=" in words[i]:
        i += 1
    return words[i:] if i < len(words) else None


def _elf_reason(binary: str) -> str | None:
    """GO_REASON, STATIC_REASON or None for an ELF file (None for anything
    else: a file that is not ELF is not ours to judge)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.segments import NoteSegment

    try:
        with open(binary, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return None
            f.seek(0)
            elf = ELFFile(f)
            if any(elf.get_section_by_name(name) is not None for name in GO_SECTIONS):
                return GO_REASON
            interpreted = False
            for segment in elf.iter_segments():
                kind = segment["p_type"]
                if kind == "PT_INTERP":
                    interpreted = True
                elif (isinstance(segment, NoteSegment) and elf.num_sections() == 0
                      and any(note["n_name"] == "Go" for note in segment.iter_notes())):
                    return GO_REASON  # no section headers to read: the Go linker's note says it
            if elf["e_type"] in ("ET_EXEC", "ET_DYN") and not interpreted:
                return STATIC_REASON
            return None
    except (OSError, ELFError, ValueError):
        return None


def answer_of(output: str) -> dict[str, object] | None:
    """The JSON object `main` printed, from the output of a run of it
    elsewhere (the last line: anything printed before it is ignored), or
    None if there is none."""
    lines = output.strip().splitlines()
    try:
        found = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m harness.backends.binaries PROGRAM [ARGS...]`: one JSON line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(json.dumps({"error": "usage: python -m harness.backends.binaries PROGRAM [ARGS...]"}))
        return 1
    try:
        found = blindness(args)
    except ImportError as e:
        print(json.dumps({"error": f"cannot read ELF files here: {e} (pip install pyelftools)"}))
        return 1
    program = resolve(args[0])
    print(json.dumps({"program": program, "blind": found.describe() if found is not None else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
