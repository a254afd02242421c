"""docs/protocols/amp.md and the code agree: the command table is checked
against the amp.Command classes, and the document's example box parses to
what the document says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from twisted.protocols import amp

from workerwire_amp.commands import (
    CAPABILITIES,
    COMMANDS,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    REQUIRED_BY_MASTER,
    REQUIRED_BY_WORKER,
    TextList,
    WireCommand,
    type_name,
)
from workerwire_amp.errors import TRACEBACK_SEPARATOR
from workerwire_amp.wire import MAX_KEYS

SPEC = Path(__file__).resolve().parent.parent / "docs" / "protocols" / "amp.md"
FIELD = re.compile(r"`([^`]+)`: `([^`]+)`")


def _table(text: str, header: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])  # GFM: "\|" is a literal bar
        rows.append([cell.strip().replace("\\|", "|") for cell in cells])
    return rows


def _fields(cell: str) -> list[tuple[str, str]]:
    if cell in ("—", "never answered"):
        return []
    found = FIELD.findall(cell)
    assert ", ".join(f"`{n}`: `{t}`" for n, t in found) == cell, f"cannot read {cell!r}"
    return found


def _codes(cell: str) -> set[str]:
    return set() if cell == "—" else set(re.findall(r"`([^`]+)`", cell))


def _spec_rows() -> dict[str, dict[str, object]]:
    rows = {}
    for name, direction, arguments, answer, errors in _table(SPEC.read_text("utf-8"), "| Command |"):
        key = name.strip("`")
        assert key not in rows, f"{key} is listed twice"
        rows[key] = {
            "direction": direction, "arguments": _fields(arguments), "answer": _fields(answer),
            "answered": answer != "never answered", "errors": _codes(errors),
        }
    return rows


def _code_row(command: type[WireCommand]) -> dict[str, object]:
    return {
        "direction": command.direction,
        "arguments": [(n.decode(), type_name(a)) for n, a in command.arguments],
        "answer": [(n.decode(), type_name(a)) for n, a in command.response],
        "answered": command.requiresAnswer,
        "errors": {code.decode() for code in command.errors.values()},
    }


def test_every_command_class_is_in_the_spec_table_and_nothing_else() -> None:
    assert sorted(_spec_rows()) == sorted(c.__name__ for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.__name__)
def test_spec_row_matches_the_command_class(command: type[WireCommand]) -> None:
    assert command.commandName == command.__name__.encode("ascii")
    assert _spec_rows()[command.__name__] == _code_row(command)


def test_capabilities_and_versions_match() -> None:
    text = SPEC.read_text("utf-8")
    rows = {r[0].strip("`"): r[2] for r in _table(text, "| name | meaning | required by |")}
    assert set(rows) == set(CAPABILITIES)
    for name, required_by in rows.items():
        assert ("master" in required_by) == (name in REQUIRED_BY_MASTER)
        assert ("worker" in required_by) == (name in REQUIRED_BY_WORKER)
    assert f"this page is version **{PROTOCOL_VERSION}**" in text
    assert MIN_PROTOCOL_VERSION == PROTOCOL_VERSION == 1


def test_limits_and_separator_match() -> None:
    text = SPEC.read_text("utf-8")
    assert f"| keys per box | {MAX_KEYS} |" in text
    assert f"`{TRACEBACK_SEPARATOR.encode('unicode_escape').decode()}`" in text
    assert f"| items in `ListOf<Unicode>` | {TextList.max_items} |" in text


def test_the_example_box_is_what_the_spec_says() -> None:
    text = SPEC.read_text("utf-8")
    hexdump = text.split("```hex\n", 1)[1].split("```", 1)[0]
    data = bytes.fromhex(hexdump)
    assert len(data) == 138
    (box,) = amp._ParserHelper.parseString(data)
    assert box == {
        b"_ask": b"1", b"_command": b"Hello", b"min_version": b"1", b"max_version": b"1",
        b"max_message_size": b"67108864", b"capabilities": TextList().toString(["chunks", "window", "parts", "transfers"]),
    }


def test_the_example_box_is_what_the_reference_worker_sends() -> None:
    from workerwire_amp.commands import Hello

    text = SPEC.read_text("utf-8")
    data = bytes.fromhex(text.split("```hex\n", 1)[1].split("```", 1)[0])
    sent = Hello.makeArguments({"min_version": MIN_PROTOCOL_VERSION, "max_version": PROTOCOL_VERSION,
                                "capabilities": list(CAPABILITIES), "max_message_size": 64 * 1024 * 1024}, None)
    sent[b"_ask"], sent[b"_command"] = b"1", b"Hello"
    assert sent.serialize() == data
