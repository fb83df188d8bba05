"""Gate verdicts as a Markdown table (for a pull-request comment) and JUnit XML (for CI)."""

from __future__ import annotations

import html
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.gate.compare import FAILING, GateResult, Verdict
from harness.text import visible

_MARK = {"pass": "pass", "improved": "improved", "regression": "**REGRESSION**", "missing": "**MISSING**",
         "incomparable": "**CANNOT COMPARE**", "inconclusive": "**INCONCLUSIVE**"}


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _amount(v: Verdict, x: float) -> str:
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return "-inf" if x < 0 else "+inf"
    return f"{x * 100:+.1f}%" if v.allowed.endswith("%") else f"{x:+.4g}"


def _change(v: Verdict) -> str:
    return "-" if v.change is None else _amount(v, v.change)


def _interval(v: Verdict) -> str:
    if v.interval is None:
        return "-"
    low, high = v.interval
    return f"[{_amount(v, low)}, {_amount(v, high)}]"


def _p(v: Verdict) -> str:
    if v.p_value is None:
        return "-"
    return f"{_num(v.p_value)} / {_num(v.p_within)}" if v.p_within is not None else _num(v.p_value)


def _detail(v: Verdict) -> str:
    return f"{v.test}; {v.needed}" if v.needed else v.test


def _escape(text: str) -> str:
    # GitHub renders inline HTML in comments: escape it, and the table's pipes.
    return html.escape(visible(text), quote=False).replace("|", "\\|")


def markdown(result: GateResult, title: str = "audioldm2-harness gate") -> str:
    """Headline, the failing and improved figures, then every gated figure in a collapsed table."""
    headline = {0: "PASS", 1: "FAIL: regression", 2: "ERROR: cannot compare",
                3: "INCONCLUSIVE (fails under inconclusive = \"fail\")"}[result.exit_code]
    unjudged = sum(v.status == "incomparable" for v in result.verdicts)
    undecided = sum(v.status == "inconclusive" for v in result.verdicts)
    if result.exit_code == 1 and unjudged:
        headline += f" (and {unjudged} figure(s) could not be compared)"
    if undecided and result.exit_code == 0:  # never "PASS" while a figure lacks the evidence
        headline = (f"INCONCLUSIVE: {undecided} figure(s) without enough evidence either way, none failed "
                    "(a warning: exit 0 under inconclusive = \"warn\")")
    elif undecided and result.exit_code != 3:
        headline += f" ({undecided} figure(s) inconclusive)"
    lines = [f"### {title}: {headline}", ""]
    lines += [f"> {note}" for note in result.notes] + ([""] if result.notes else [])
    if result.environment_differences:
        lines += [f"> compared across environments (allowed): {'; '.join(result.environment_differences)}", ""]
    order = {"incomparable": 0, "regression": 1, "missing": 2, "inconclusive": 3, "improved": 4, "pass": 5}
    verdicts = sorted(result.verdicts, key=lambda v: (order[v.status], v.label, v.figure))
    notable = [v for v in verdicts if v.status != "pass"]
    if notable:
        lines += _table(notable) + [""]
    lines += [f"<details><summary>all {len(verdicts)} gated figures</summary>", "", *_table(verdicts), "",
              "</details>", "",
              f"{len(result.verdicts)} figures gated, {result.ungated} not matched by any rule"
              + (f"; cells only in the candidate (not gated): {len(result.new_cells)}" if result.new_cells else "")
              + ". A figure fails when its confidence interval lies beyond the allowance, passes when it lies "
              "within, and is inconclusive otherwise (where a rule sets significance = false or the data give "
              "no test: the threshold alone). p: one-sided p of \"worse than allowed\" / of \"within the "
              "allowance\"."]
    return "\n".join(lines) + "\n"


def _table(verdicts: list[Verdict]) -> list[str]:
    level = next((v.interval_level for v in verdicts if v.interval_level), None)
    ci = f"{level:.0%} CI" if level else "CI"
    rows = [f"| cell | figure | baseline | candidate | change (worse > 0) | {ci} | allowed | test | p | verdict |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for v in verdicts:
        rows.append(f"| {_escape(v.label)} | {_escape(v.figure)} | {_num(v.baseline)} | {_num(v.candidate)} | {_change(v)} "
                    f"| {_interval(v)} | {v.allowed} | {_escape(_detail(v))} | {_p(v)} | {_MARK[v.status]} |")
    return rows


def _xml(text: str) -> str:
    return visible(text)  # XML 1.0 cannot carry most control characters: show them instead


def junit(result: GateResult, path: str | Path, suite: str = "audioldm2-harness gate") -> Path:
    """One testcase per gated figure: regressions and missing figures are failures, incomparable ones
    errors, inconclusive ones failures under ``inconclusive = "fail"`` and skipped under "warn"."""
    fail_undecided = result.inconclusive_policy == "fail"
    failures = sum(v.status in FAILING or (v.status == "inconclusive" and fail_undecided) for v in result.verdicts)
    errors = sum(v.status == "incomparable" for v in result.verdicts)
    skipped = sum(v.status == "inconclusive" and not fail_undecided for v in result.verdicts)
    root = ET.Element("testsuite", name=suite, tests=str(len(result.verdicts)),
                      failures=str(failures), errors=str(errors), skipped=str(skipped))
    for v in result.verdicts:
        case = ET.SubElement(root, "testcase", classname=_xml(f"{v.label} [{v.cell[:12]}]"), name=_xml(v.figure))
        detail = _xml(f"baseline {_num(v.baseline)} {v.unit}, candidate {_num(v.candidate)} {v.unit}, "
                  f"change {_change(v)} (allowed {v.allowed}, CI {_interval(v)}); {_detail(v)}; p={_p(v)}")
        if v.status in FAILING or (v.status == "inconclusive" and fail_undecided):
            ET.SubElement(case, "failure", message=_xml(f"{v.status}: {v.figure}")).text = detail
        elif v.status == "inconclusive":
            ET.SubElement(case, "skipped", message=_xml(f"inconclusive: {v.figure}")).text = detail
        elif v.status == "incomparable":
            ET.SubElement(case, "error", message=_xml(f"cannot compare {v.figure}")).text = detail
        else:
            ET.SubElement(case, "system-out").text = detail
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path
