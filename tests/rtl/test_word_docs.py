"""The instruction word's width and bit counts that docs/isa.md and docs/rtl.md state are the
code's (the docs said 432, 400 and 384 bits in places while ``isa.WORD_BITS`` is 512)."""

from __future__ import annotations

import re
from pathlib import Path

from dataflows.isa import FIELDS, WORD_BITS, Unit
from rtl.layouts import unit_instr

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _bit_ranges() -> dict[str, tuple[int, int]]:
    ranges, at = {}, 0
    for name, width in FIELDS:
        ranges[name] = (at, at + width - 1)
        at += width
    return ranges


def test_docs_state_the_word_width_and_the_bits_used():
    used = sum(width for _, width in FIELDS)
    for doc in ("isa.md", "rtl.md"):
        text = (DOCS / doc).read_text()
        widths = {int(w) for w in re.findall(r"payload a (\d+)-bit|into (?:a|the) (\d+)-bit word",
                                             text) for w in w if w}
        assert widths == {WORD_BITS}, (doc, widths)
        assert f"0–{used - 1}" in text and f"{used}–{WORD_BITS - 1}" in text, doc


def test_older_words_are_prefixes_at_the_bits_isa_md_states():
    """Each row of docs/isa.md's table of older words: the first field that must be 0 starts
    where the older word's used bits end."""
    text = (DOCS / "isa.md").read_text()
    rows = re.findall(r"\| (\d+)-bit \| 0–(\d+) \| `(\w+)` and after \(bits (\d+)–(\d+)\)", text)
    assert len(rows) == 3
    ranges = _bit_ranges()
    for width, last_used, first_new, start, end in rows:
        assert ranges[first_new][0] == int(last_used) + 1 == int(start) <= int(width)
        assert int(end) == sum(w for _, w in FIELDS) - 1


def test_rtl_md_states_each_units_instruction_memory_width():
    text = (DOCS / "rtl.md").read_text()
    sizes = (unit_instr(Unit.DMA).size, unit_instr(Unit.PE).size,
             unit_instr(Unit.PE, output_stationary=True).size, unit_instr(Unit.VEC).size)
    stated = re.search(r"(\d+) bits for the DMA, (\d+) for\s+the PE array \((\d+) on the "
                       r"output-stationary array, which adds `OS_FIELDS`\), (\d+) for the vector",
                       text)
    assert stated and tuple(map(int, stated.groups())) == sizes
    low = re.search(r"The\s+low (\d+) bits are the fields", text)
    assert low and int(low.group(1)) == _bit_ranges()["shift"][1] + 1
