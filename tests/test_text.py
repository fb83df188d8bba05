"""Control characters in user text are made visible in HTML, Markdown, CSV and JUnit outputs."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from harness.text import visible

HOSTILE = "a\x00b\x1b[2J\u202egnp.exe\r\nc\x7f\x85"


@pytest.mark.parametrize("text, shown", [
    ("plain text, ünïcödé ♪", "plain text, ünïcödé ♪"),
    ("\x00", "\u2400"), ("\t\n\r", "\u2409\u240a\u240d"), ("\x1b[31m", "\u241b[31m"), ("\x7f", "\u2421"),
    ("\x85\x9f", "\\x85\\x9f"), ("\u202eabc\u2066", "\\u202eabc\\u2066"), ("\u2028", "\\u2028"),
])
def test_visible_by_hand(text, shown):
    assert visible(text) == shown


def _no_raw_controls(text: str) -> None:
    assert not any(ord(c) < 0x20 and c not in "\n" or 0x7f <= ord(c) <= 0x9f or c == "\u202e" for c in text)


def test_report_outputs_show_control_characters(tmp_path):
    from harness.report.build import build_report
    from harness.spec import expand, parse_spec
    from harness.store import RunStore, SampleRecord

    spec = parse_spec({"name": "t", "checkpoints": ["tiny-audio"], "negative_prompts": [HOSTILE],
                       "prompts": {"set": "smoke"}})
    cell = expand(spec, "cpu")[0]
    store = RunStore(tmp_path / "run")
    store.add_cells([cell], {})
    store.write_sample(SampleRecord(cell.id, "ok" + HOSTILE, "prompt " + HOSTILE, None, 0),
                       np.zeros(1600, np.float32), 16000)
    store.write_sample(SampleRecord(cell.id, "bad" + HOSTILE, "prompt " + HOSTILE, None, 0, status="failed",
                                    error="RuntimeError: " + HOSTILE), None, 16000)
    store.close()
    result = build_report([tmp_path / "run"], tmp_path / "report", formats="html,md,csv", listen=2)
    shown = visible(HOSTILE)
    for fmt in ("html", "md", "csv"):
        text = result.files[fmt].read_text(encoding="utf-8")
        _no_raw_controls(text)
        assert "\u2400" in text and "\\u202e" in text, fmt
    html = result.files["html"].read_text(encoding="utf-8")
    assert shown.replace("&", "&amp;") in html  # the prompt, every character accounted for


def test_gate_markdown_and_junit_show_control_characters(tmp_path):
    from harness.gate.compare import GateResult, Verdict
    from harness.gate.output import junit, markdown

    result = GateResult([Verdict("c" * 16, "label " + HOSTILE, "fad:" + HOSTILE, "regression", 1.0, 2.0, 1.0,
                                 "10%", "test " + HOSTILE, 0.01)])
    text = markdown(result)
    _no_raw_controls(text)
    assert "\u2400" in text and "\\u202e" in text
    path = junit(result, tmp_path / "junit.xml")
    raw = path.read_text(encoding="utf-8")
    _no_raw_controls(raw.replace("\n", ""))
    case = ET.parse(path).getroot().find("testcase")  # well-formed XML
    assert case.get("name") == "fad:" + visible(HOSTILE)
