"""Every event name has a level, and the README documents it with that level.

The README's event table is the users' contract (`jq` recipes count these names), so a name
the code can emit but the README does not list, or lists with another level, fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from zraft.core.events import REQUIRED_FIELDS, EventName
from zraft.diagnostics import FIELDS, LEVELS, NodeEvent

README = Path(__file__).resolve().parent.parent / "README.md"
ROW = re.compile(r"^\| `(?P<name>[a-z_]+)` \| (?P<level>[a-z]*) \|", re.MULTILINE)


def readme_levels() -> dict[str, str]:
    """Event name -> level, from the README's event table (its section "Events and `jq`":
    other tables, such as the metrics', have rows of the same shape)."""
    text = README.read_text()
    section = text[text.index("\n## Events and `jq`\n") :]
    section = section[: section.index("\n## ", 1)]
    return {m["name"]: m["level"] for m in ROW.finditer(section)}


ALL_NAMES = sorted({str(n) for n in EventName} | {str(n) for n in NodeEvent})


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_event_is_documented_with_its_level(name: str) -> None:
    """A name the code can emit appears in the README table with the level it is logged at."""
    documented = readme_levels()
    assert name in documented, f"README's event table lacks `{name}`"
    assert documented[name] == LEVELS[name], f"`{name}`: README says {documented[name]}"


def test_core_events_have_fixed_fields() -> None:
    """Core events carry exactly their documented fields (checked when an Event is built)."""
    for name in EventName:
        assert FIELDS[name] == REQUIRED_FIELDS[name]


def test_the_readme_lists_no_unknown_names() -> None:
    """No stale rows: every README event is one the code knows (or the unknown marker)."""
    extra = set(readme_levels()) - set(ALL_NAMES) - {"unknown_event"}
    assert not extra, f"README documents events the code does not have: {sorted(extra)}"
