"""Gate verdicts as a Markdown table (for a pull-request comment) and JUnit XML (for CI)."""

from __future__ import annotations

import html
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.gate.compare import FAILING, GateResult, Verdict
from harness.text import visible

_MARK = {"pass": "pass", "improved": "improved", "regression": "**REGRESSION**", "missing": "**MISSING**",
         "incomparable": "**CANNOT COMPARE**"}


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _change(v: Verdict) -> str:
    if v.change is None:
        return "-"
    if v.change == 0:
        return "0"
    if v.allowed.endswith("%"):
        return f"{v.change * 100:+.1f}%" if math.isfinite(v.change) else str(v.change)
    return f"{v.change:+.4g}"


def _escape(text: str) -> str:
    # GitHub renders inline HTML in comments: escape it, and the table's pipes.
    return html.escape(visible(text), quote=False).replace("|", "\\|")


def markdown(result: GateResult, title: str = "audioldm2-harness gate") -> str:
    """Headline, the failing and improved figures, then every gated figure in a collapsed table."""
    headline = {0: "PASS", 1: "FAIL: regression", 2: "ERROR: cannot compare"}[result.exit_code]
    unjudged = sum(v.status == "incomparable" for v in result.verdicts)
    if result.exit_code == 1 and unjudged:
        headline += f" (and {unjudged} figure(s) could not be compared)"
    lines = [f"### {title}: {headline}", ""]
    if result.environment_differences:
        lines += [f"> compared across environments (allowed): {'; '.join(result.environment_differences)}", ""]
    order = {"incomparable": 0, "regression": 1, "missing": 2, "improved": 3, "pass": 4}
    verdicts = sorted(result.verdicts, key=lambda v: (order[v.status], v.label, v.figure))
    notable = [v for v in verdicts if v.status != "pass"]
    if notable:
        lines += _table(notable) + [""]
    lines += [f"<details><summary>all {len(verdicts)} gated figures</summary>", "", *_table(verdicts), "",
              "</details>", "",
              f"{len(result.verdicts)} figures gated, {result.ungated} not matched by any rule"
              + (f"; cells only in the candidate (not gated): {len(result.new_cells)}" if result.new_cells else "")
              + ". A figure fails when its regression exceeds the allowance and is significant (or, where "
              "a rule sets significance = false or the data give no test, on the threshold alone)."]
    return "\n".join(lines) + "\n"


def _table(verdicts: list[Verdict]) -> list[str]:
    rows = ["| cell | figure | baseline | candidate | change (worse > 0) | allowed | test | p | verdict |",
            "|---|---|---|---|---|---|---|---|---|"]
    for v in verdicts:
        rows.append(f"| {_escape(v.label)} | {_escape(v.figure)} | {_num(v.baseline)} | {_num(v.candidate)} | {_change(v)} "
                    f"| {v.allowed} | {_escape(v.test)} | {_num(v.p_value)} | {_MARK[v.status]} |")
    return rows


def _xml(text: str) -> str:
    return visible(text)  # XML 1.0 cannot carry most control characters: show them instead


def junit(result: GateResult, path: str | Path, suite: str = "audioldm2-harness gate") -> Path:
    """One testcase per gated figure; regressions and missing figures are failures, the rest errors."""
    failures = sum(v.status in FAILING for v in result.verdicts)
    errors = sum(v.status == "incomparable" for v in result.verdicts)
    root = ET.Element("testsuite", name=suite, tests=str(len(result.verdicts)),
                      failures=str(failures), errors=str(errors), skipped="0")
    for v in result.verdicts:
        case = ET.SubElement(root, "testcase", classname=_xml(f"{v.label} [{v.cell[:12]}]"), name=_xml(v.figure))
        detail = _xml(f"baseline {_num(v.baseline)} {v.unit}, candidate {_num(v.candidate)} {v.unit}, "
                  f"change {_change(v)} (allowed {v.allowed}); {v.test}; p={_num(v.p_value)}")
        if v.status in FAILING:
            ET.SubElement(case, "failure", message=_xml(f"{v.status}: {v.figure}")).text = detail
        elif v.status == "incomparable":
            ET.SubElement(case, "error", message=_xml(f"cannot compare {v.figure}")).text = detail
        else:
            ET.SubElement(case, "system-out").text = detail
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path
