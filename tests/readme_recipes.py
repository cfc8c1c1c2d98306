"""The README's shell recipes as steps a test can run: what to run, what it should print.

Every ```sh``` and ```console``` block and every ```python``` block of README.md becomes
steps. In a console block, a line starting with `$ ` is a command (continued by a
trailing backslash or up to the end of a here-document) and the lines after it, up to the
next command, are the output it shows. In an sh block every line that is not a comment
is a command that shows no output. A python block is one step: the whole program.

`expect_failure` says whether the shown output is a refusal (`error: ...`, `(not found)`,
exit 1..4); `output_pattern` turns a shown line into a regular expression that tolerates
what differs from one cluster to another (numbers, column widths, `...`); `follow`
marks a command that runs until Ctrl-C (its output ends with `^C`, or it follows a file).

`SKIPS` says which steps are not run against the test's cluster, each with the reason and
where else it is checked; a step no skip names is run. This module is pure: the test
(`tests/integration/test_readme.py`) runs the steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FENCE = re.compile(r"^```(\w*)\s*$")
NUMBER = r"\d+(?:\.\d+)?(?:[KMGT]|B\b)?"
"""A number as the CLI prints it, with `human_bytes`' unit (`512B`, `1.2K`, `35M`)."""
HEX = r"[0-9a-f]{16,}"
"""A digest or an identity (16 hex digits or more): any other one matches."""

SKIPS: tuple[tuple[str, str], ...] = (
    (r"^bin/zraft-demo$", "the demo: tests/integration/test_demo.py, through a terminal"),
    (r"python3 -m venv", "installs: .ci/run does it on a fresh machine"),
    (r"-m pytest", "the test suite itself"),
    (r"zraft-nemesis", "fault runs of minutes: tests/integration/test_*nemesis*.py run short ones"),
    (r"_bench\.py|zraft\.bench\.|\bbench --", "benchmarks: smoke-run by their own tests"),
    (r"--all\b", "the test starts the cluster with this very command before the steps"),
    (r"^\.venv/bin/zraft-client --config conf/local.toml\s+#", "the REPL: test_demo.py"),
    (r"<pid|kill -9", "the failover walkthrough: tests/integration/test_supervisor.py"),
    (r"--id n1\s", "the failover walkthrough's restart: tests/integration/test_supervisor.py"),
    (
        r"\bn4\b|10\.0\.0\.|remove n3",
        "other hosts (10.0.0.4): tests/integration/test_membership*.py on loopback",
    ),
    (r"# which node leads\?", "the failover walkthrough: tests/integration/test_supervisor.py"),
    (r"txn -i$", "typed at a terminal (input and prompts interleaved): tests/test_cli_kv.py"),
    (r"lease keep-alive 9$", "needs a lost quorum: tests/test_cli_lease.py (lease_lost)"),
    (
        r"watch demo/ --prefix",
        "needs writes from another terminal: tests/integration/test_watch.py",
    ),
)
"""(regular expression searched in the command, why it is not run here)."""


@dataclass(frozen=True)
class Step:
    """One command (or python program) of the README and the output it shows."""

    line: int
    """README line of the command (1-based)."""
    kind: str
    """`sh`, `console` or `python`."""
    command: str
    expected: tuple[str, ...] = ()

    @property
    def expect_failure(self) -> bool:
        """Whether the shown output says the command is refused (a non-zero exit)."""
        return any(line.startswith("error:") or line == "(not found)" for line in self.expected)

    @property
    def follow(self) -> bool:
        """Whether it runs until Ctrl-C (the test interrupts it after a while)."""
        return (self.expected[-1:] == ("^C",)) or " -F " in self.command

    def skip_reason(self) -> str | None:
        """Why this step is not run against the test's cluster, or None to run it."""
        if self.kind == "python":
            return None
        shown = "\n".join((self.command, *self.expected))
        for pattern, reason in SKIPS:
            if re.search(pattern, shown, re.MULTILINE):
                return reason
        return None


def blocks(text: str) -> list[tuple[int, str, list[str]]]:
    """Every fenced block: (line of its first body line, language, body lines)."""
    found = []
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        opened = FENCE.match(lines[index])
        if opened is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        found.append((index + 2, opened.group(1), lines[index + 1 : end]))
        index = end + 1
    return found


def steps(text: str) -> list[Step]:
    """The steps of every sh, console and python block, in README order."""
    result: list[Step] = []
    for first, language, body in blocks(text):
        if language == "sh":
            result += [
                Step(first + n, "sh", line.strip())
                for n, line in enumerate(body)
                if line.strip() and not line.lstrip().startswith("#")
            ]
        elif language == "console":
            result += console_steps(first, body)
        elif language == "python":
            result.append(Step(first, "python", "\n".join(body) + "\n"))
    return result


def console_steps(first: int, body: list[str]) -> list[Step]:
    """The `$ ` commands of one console block with the lines each shows."""
    result: list[Step] = []
    index = 0
    while index < len(body):
        if not body[index].startswith("$ "):
            index += 1  # text before the first command: nothing to run
            continue
        start = index
        command = [body[index][2:]]
        heredoc = re.search(r"<<-?'?(\w+)'?", body[index])
        index += 1
        while command[-1].endswith("\\") and index < len(body):
            command.append(body[index])
            index += 1
        if heredoc:
            while index < len(body):
                command.append(body[index])
                index += 1
                if command[-1] == heredoc.group(1):
                    break
        output = []
        while index < len(body) and not body[index].startswith("$ "):
            output.append(body[index])
            index += 1
        while output and not output[-1].strip():
            output.pop()  # a blank line before the next command shows nothing
        result.append(Step(first + start, "console", "\n".join(command), tuple(output)))
    return result


def output_pattern(shown: str) -> re.Pattern[str]:
    """A shown output line as a pattern: any number for a number, any digest for a
    digest, any run of blanks for a run of blanks, anything for `...`; the rest literally."""
    parts = re.split(rf"(\.\.\.|{HEX}|{NUMBER}|\s+)", shown.strip())
    pattern = []
    for part in parts:
        if part == "...":
            pattern.append(".*")
        elif re.fullmatch(HEX, part):
            pattern.append(HEX)
        elif re.fullmatch(NUMBER, part):
            pattern.append(NUMBER)
        elif part and part.isspace():
            pattern.append(r"\s+")
        else:
            pattern.append(re.escape(part))
    return re.compile("".join(pattern))


def unmatched(expected: tuple[str, ...], actual: list[str]) -> list[str]:
    """The shown lines no printed line matches (each actual line used once), plus the
    actual lines left over, as messages; empty when the output is what the README shows.

    Lines are matched as a multiset, so a table whose rows come in another order (which
    node leads) still matches; blank lines are ignored."""
    remaining = [line for line in actual if line.strip()]
    problems = []
    for shown in (line for line in expected if line.strip()):
        pattern = output_pattern(shown)
        hit = next((n for n, line in enumerate(remaining) if pattern.fullmatch(line.strip())), None)
        if hit is None:
            problems.append(f"shown but not printed: {shown!r}")
        else:
            remaining.pop(hit)
    problems += [f"printed but not shown: {line!r}" for line in remaining]
    return problems


def followed_ok(expected: tuple[str, ...], actual: list[str]) -> list[str]:
    """For a command interrupted after a while: every printed line must match one of the
    shown lines (how many times depends on how long it ran)."""
    patterns = [output_pattern(line) for line in expected if line.strip() and line != "^C"]
    return [
        f"printed but not shown: {line!r}"
        for line in actual
        if line.strip() and not any(p.fullmatch(line.strip()) for p in patterns)
    ]
