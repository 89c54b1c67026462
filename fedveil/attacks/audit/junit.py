"""`fedveil audit --junit FILE`: the audit as JUnit XML, so CI shows each claim as a test.

One testcase per claimed cell (classname: the protection, name: the attack family); a
breach is a <failure> carrying its BREACH lines, a failed job an <error>, a cell that
could not be judged <skipped> with why. Unclaimed cells are not tests: they are
reported, never gate. How a cell counts comes from outcome.cell_outcome only. The claimed
multi-round observer row (attacks.audit.observer_rows: classname `observer`) is a test
too, judged by the row itself; its open FedAvg row is reported only.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from fedveil.attacks.audit.observer_rows import HELD, ObserverRow
from fedveil.attacks.audit.outcome import cell_outcome
from fedveil.attacks.audit.report import AuditReport

SUITE = "fedveil audit"


def junit_tree(report: AuditReport) -> ET.ElementTree:
    suite = ET.Element("testsuite", name=SUITE, timestamp=report.created)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    properties = ET.SubElement(suite, "properties")
    for name, value in (("profile", report.profile), ("fedveil", report.fedveil_version)):
        ET.SubElement(properties, "property", name=name, value=value)
    for cell in report.cells:
        outcome = cell_outcome(cell)
        if outcome.kind == "report":
            continue
        counts["tests"] += 1
        case = ET.SubElement(
            suite,
            "testcase",
            classname=cell.protection.value,
            name=cell.attack.value,
            time=f"{cell.seconds:.3f}",
        )
        first = outcome.message.splitlines()[0] if outcome.message else outcome.label
        if outcome.kind == "fail":
            counts["failures"] += 1
            ET.SubElement(case, "failure", message=first, type=outcome.label).text = outcome.message
        elif outcome.kind == "error":
            counts["errors"] += 1
            ET.SubElement(case, "error", message=first, type="job").text = outcome.message
        elif outcome.kind == "skip":
            counts["skipped"] += 1
            ET.SubElement(case, "skipped", message=f"{outcome.label}: {outcome.message}")
    for row in report.active:
        if not isinstance(row, ObserverRow) or not row.claimed:
            continue
        counts["tests"] += 1
        classname, _, name = row.name.partition("/")
        case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0.000")
        if row.breached:
            counts["failures"] += 1
            line = row.breach_line()
            ET.SubElement(case, "failure", message=line, type="breach").text = line
        elif row.failed:
            counts["errors"] += 1
            ET.SubElement(case, "error", message=row.detail, type="job").text = row.detail
        elif row.observed != HELD:
            counts["skipped"] += 1
            ET.SubElement(case, "skipped", message=f"{row.observed}: {row.reason or row.detail}")
    suite.set("time", f"{report.seconds:.3f}")
    for key, count in counts.items():
        suite.set(key, str(count))
    root = ET.Element("testsuites", name=SUITE)
    for key in ("tests", "failures", "errors", "skipped", "time"):
        root.set(key, suite.get(key, ""))
    root.append(suite)
    tree = ET.ElementTree(root)
    ET.indent(tree)
    return tree


def write_junit(report: AuditReport, path: Path) -> None:
    junit_tree(report).write(path, encoding="utf-8", xml_declaration=True)
