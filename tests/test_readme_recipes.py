"""The README step parser (`tests/readme_recipes.py`) that `test_readme.py` relies on."""

from __future__ import annotations

from tests.readme_recipes import output_pattern, steps, unmatched

CONSOLE = """\
text
```console
$ zraft-client put k v
OK
$ cat > /tmp/x.json <<'EOF'
{"a": 1}
EOF
$ zraft-node --join \\
      --peer tcp://h:1
$ zraft-client get missing
(not found)

$ zraft-client lease keep-alive 8
lease 8 keepalived with TTL(3)
^C
```
```sh
# a comment
jq . logs/*.jsonl
```
"""


def test_console_commands_outputs_heredocs_and_continuations() -> None:
    found = steps(CONSOLE)
    assert [s.command.splitlines()[0] for s in found] == [
        "zraft-client put k v",
        "cat > /tmp/x.json <<'EOF'",
        "zraft-node --join \\",
        "zraft-client get missing",
        "zraft-client lease keep-alive 8",
        "jq . logs/*.jsonl",
    ]
    put, heredoc, joined, missing, keepalive, recipe = found
    assert put.expected == ("OK",) and not put.expect_failure and put.line == 3
    assert heredoc.command.endswith('{"a": 1}\nEOF') and heredoc.expected == ()
    assert joined.command.endswith("--peer tcp://h:1") and joined.expected == ()
    assert missing.expected == ("(not found)",) and missing.expect_failure
    assert keepalive.follow and not put.follow
    assert recipe.kind == "sh" and recipe.expected == ()


def test_patterns_allow_numbers_widths_and_ellipses_only() -> None:
    row = output_pattern("n1    tcp://127.0.0.1:7201  leader  3.7M  yes")
    assert row.fullmatch("n2 tcp://127.0.0.1:49583 leader 115B yes")
    assert not row.fullmatch("n2 tcp://127.0.0.1:49583 follower 115B yes")
    assert output_pattern("error: x (a; ...)").fullmatch("error: x (a; b; c)")
    assert not output_pattern("OK").fullmatch("OK!")
    digest = output_pattern("in b.zbk, sha256 3f2a9c1d0b7e4a55...")
    assert digest.fullmatch("in b.zbk, sha256 1892c0cdcd63ad59...")
    assert not digest.fullmatch("in c.zbk, sha256 1892c0cdcd63ad59...")


def test_unmatched_names_missing_and_extra_lines_in_any_row_order() -> None:
    shown = ("node role", "n1 leader", "n2 follower")
    assert unmatched(shown, ["node role", "n1 follower", "n2 leader"]) == []
    assert unmatched(shown, ["node role", "n1 follower", "n2 follower"]) == [
        "shown but not printed: 'n1 leader'",
        "printed but not shown: 'n2 follower'",
    ]
