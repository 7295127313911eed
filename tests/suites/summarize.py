"""Tabulates one client-suites run: summarize.py RUN_DIR [--causes N]

RUN_DIR holds `modules.tsv` (one line per module: name, exit status, seconds; written by
scripts/client-suites.sh) and, per module, `NAME.xml` (pytest's JUnit report) and `NAME.log`
(its output). A module killed at its time limit has no report: its tests are counted from the
`PASSED`/`FAILED`/... lines of its verbose log, and it is marked timed out. A module without a
report that was not killed (a script, or a pytest that crashed) counts as one test that passed
when it exited 0 and failed otherwise; a pytest that exited non-zero with nothing failed (no
tests collected, a crash at exit) counts one error more. Prints the table, writes it to
RUN_DIR/summary.txt, with --causes lists the most frequent first lines of failure messages, and
exits 1 when anything failed, errored or timed out."""
import collections
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

TIMED_OUT = (124, 137)
# `path::test[params] OUTCOME [ 12%]`; parameters may hold spaces.
VERBOSE_RESULT = re.compile(
    r"^\S+::.* (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\s+\[\s*\d+%\]$", re.M
)


class Counts:
    def __init__(self):
        self.passed = self.failed = self.skipped = self.errors = 0

    def add(self, other):
        self.passed += other.passed
        self.failed += other.failed
        self.skipped += other.skipped
        self.errors += other.errors

    @property
    def total(self):
        return self.passed + self.failed + self.skipped + self.errors


def from_junit(path, causes):
    counts = Counts()
    for case in ET.parse(path).getroot().iter("testcase"):
        failure = case.find("failure")
        error = case.find("error")
        if failure is not None:
            counts.failed += 1
            causes.append((failure.get("message") or "", case))
        elif error is not None:
            counts.errors += 1
            causes.append((error.get("message") or "", case))
        elif case.find("skipped") is not None:
            counts.skipped += 1
        else:
            counts.passed += 1
    return counts


def from_log(path):
    counts = Counts()
    text = path.read_text(errors="replace") if path.exists() else ""
    for outcome in VERBOSE_RESULT.findall(text):
        if outcome in ("PASSED", "XFAIL"):
            counts.passed += 1
        elif outcome in ("FAILED", "XPASS"):
            counts.failed += 1
        elif outcome == "SKIPPED":
            counts.skipped += 1
        else:
            counts.errors += 1
    return counts


def first_line(message):
    line = message.strip().splitlines()[0] if message.strip() else "(no message)"
    # Addresses, sizes and names of temporary files differ per test; fold them together.
    line = re.sub(r"0x[0-9a-fA-F]+", "0x…", line)
    return re.sub(r"\d{5,}", "N", line)[:160]


def main():
    run = Path(sys.argv[1])
    n_causes = int(sys.argv[sys.argv.index("--causes") + 1]) if "--causes" in sys.argv else 0
    rows, causes, total = [], [], Counts()
    timed_out = 0
    for line in (run / "modules.tsv").read_text().splitlines():
        name, status, seconds = line.split("\t")
        status = int(status)
        junit = run / f"{name}.xml"
        if junit.exists():
            counts = from_junit(junit, causes)
            if status not in (0, *TIMED_OUT) and counts.failed + counts.errors == 0:
                counts.errors += 1
                causes.append((f"pytest exited with status {status}, nothing failed", None))
        elif status in TIMED_OUT:
            counts = from_log(run / f"{name}.log")
        else:
            counts = Counts()
            if status == 0:
                counts.passed = 1
            else:
                counts.failed = 1
                causes.append((f"{name} exited with status {status}", None))
        late = status in TIMED_OUT
        if late:
            causes.append(("module killed at its time limit", None))
        timed_out += late
        total.add(counts)
        rows.append((name, counts, "yes" if late else "", seconds))

    width = max([len(r[0]) for r in rows] + [6])
    out = [f"{'module':<{width}}  passed  failed  skipped  errors  timed out  seconds"]
    for name, c, late, seconds in rows:
        out.append(
            f"{name:<{width}}  {c.passed:>6}  {c.failed:>6}  {c.skipped:>7}  {c.errors:>6}"
            f"  {late:>9}  {seconds:>7}"
        )
    out.append(
        f"{'total':<{width}}  {total.passed:>6}  {total.failed:>6}  {total.skipped:>7}"
        f"  {total.errors:>6}  {timed_out:>9}"
    )
    ran = total.passed + total.failed + total.errors
    rate = 100.0 * total.passed / ran if ran else 0.0
    out.append(
        f"{len(rows)} modules, {total.total} tests: {total.passed} passed, {total.failed} failed, "
        f"{total.errors} errors, {total.skipped} skipped; pass rate {rate:.1f}% of tests run"
    )
    if n_causes:
        grouped = collections.Counter(first_line(m) for m, _ in causes)
        out.append("")
        out.append("top failure causes (tests lost, first line of the message):")
        for message, n in grouped.most_common(n_causes):
            out.append(f"{n:>6}  {message}")
    text = "\n".join(out) + "\n"
    (run / "summary.txt").write_text(text)
    sys.stdout.write(text)
    return 1 if total.failed + total.errors + timed_out else 0


if __name__ == "__main__":
    sys.exit(main())
