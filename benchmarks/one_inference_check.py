"""Does any verdict a finished run printed contradict the interval printed beside it? (issue 30)

    python benchmarks/one_inference_check.py RUN_DIR TERMINAL_LOG [--strict] [--json OUT.json]

RUN_DIR is a workflow directory after a run (its results/compare/*.json, results/report/autotune.json,
headline.json, summary.csv and report.md); TERMINAL_LOG what the run printed (relative paths are read
from RUN_DIR first). Every verdict is checked against the interval beside it by issue 30's rule, with
each shape's resolution and threshold from its compare file (defaults 0.005 and 0.02):

* faster (slower): the interval lies wholly above 1 + resolution (below 1 / (1 + resolution)) and the
  speedup reaches the practical threshold, 1 + threshold (1 / (1 + threshold));
* same: the interval meets the practical band [1 / (1 + threshold), 1 + threshold], and is not both
  outside the resolution band and beside a speedup past the threshold (that would be faster or slower);
* too few rounds: no interval, no speedup;
* autotune's tied (not slower) and untied (slower), as the verdict they stand for;
* the speedup lies inside its interval.

JSON and summary.csv are checked on their exact numbers (and `significant`, `practical`, `tied`, the
p-values against alpha, the confidence against alpha and the run's family). Markdown and the terminal
are checked on the printed numbers, where the mark `*` stands for faster or slower (by the side of
1 its speedup is on), no mark for same (autotune's tied entries: not slower), and the words faster,
slower, same and "too few rounds" for themselves. A printed number stands for any value that rounds
to it: a contradiction is a verdict that no such values satisfy; one that only rounding reconciles
(e.g. "faster" beside a lower bound printed as 1.005 exactly) is listed as on the edge, and fails
the check only with --strict. Each printed speedup is also matched with the object it was printed
from (the compare file for the terminal's per-shape lines, headline.json for the headlines and the
matrix, summary.csv for the results tables, autotune.json for the autotune table): a printed interval
or verdict that differs from its object is a mismatch, and fails the check. Statements of the
intervals' level ("99.7% intervals, corrected for the run's 15 comparisons") are checked against
alpha and the family. Prints how many verdicts were checked per source and every problem; exit 1
when there is a contradiction or a mismatch (or an edge case, with --strict).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

TOO_FEW = "too few rounds"
RESOLUTION, THRESHOLD, ALPHA = 0.005, 0.02, 0.05
PLURAL = {"contradiction": "contradictions", "mismatch": "mismatches", "edge": "edge cases"}
VERDICTS = ("faster", "slower", "same", TOO_FEW)
# `1.56× [1.53, 1.60]`, optionally followed by the significance mark; numbers may have thousands separators
SPEEDUP = re.compile(r"(?P<point>[\d.,]+)× \[(?P<lo>[\d.,]+), (?P<hi>[\d.,]+)\](?P<mark> \*)?")
LEVEL = re.compile(
    r"(?P<level>[\d.]+)% intervals(?:, corrected for the run's (?P<family>\d+) comparisons"
    r"|, this shape alone)?"
)
CORRECTION = re.compile(
    r"Bonferroni for the run's (?P<family>\d+) comparisons?: intervals at (?P<level>[\d.]+)%"
)


@dataclass
class Finding:
    source: str  # json/compare, terminal/headline, report/matrix, ...
    where: str
    kind: str  # contradiction, mismatch, edge
    text: str


class Checker:
    def __init__(self, strict: bool = False) -> None:
        self.counts: dict[str, int] = {}
        self.findings: list[Finding] = []
        self.strict = strict

    def count(self, source: str, n: int = 1) -> None:
        self.counts[source] = self.counts.get(source, 0) + n

    def add(self, source: str, where: str, kind: str, text: str) -> None:
        self.findings.append(Finding(source, where, kind, text))

    def failed(self) -> bool:
        kinds = {"contradiction", "mismatch"} | ({"edge"} if self.strict else set())
        return any(f.kind in kinds for f in self.findings)


# ------------------------------------------------------------------------------------- the rule


def practical(speedup: float, threshold: float) -> bool:
    """stats.practically_different: the speedup reaches the threshold in either direction."""
    return speedup > 0 and max(speedup, 1.0 / speedup) - 1.0 >= threshold


def outside(lo: float, hi: float, resolution: float) -> bool:
    """stats.decide's `significant`: the interval lies wholly outside the resolution band."""
    return lo > 1.0 + resolution or hi < 1.0 / (1.0 + resolution)


def exact_problems(
    verdict: str | None, speedup: Any, ci: Any, resolution: float, threshold: float
) -> list[str]:
    """What is wrong with `verdict` beside the exact `speedup` and interval `ci` (empty: it agrees)."""
    if verdict not in VERDICTS:
        return [f"unknown verdict {verdict!r}"]
    if verdict == TOO_FEW:
        return [] if ci is None else [f"{TOO_FEW} beside an interval {ci}"]
    if ci is None or speedup is None:
        return [f"{verdict} without an interval (ci {ci}, speedup {speedup})"]
    lo, hi = (float(x) for x in ci)
    s = float(speedup)
    problems = []
    if not lo <= s <= hi:
        problems.append(f"speedup {s:.6g} outside its interval [{lo:.6g}, {hi:.6g}]")
    if verdict == "faster" and not (lo > 1 + resolution and s > 1 and practical(s, threshold)):
        problems.append(
            f"faster, but lower bound {lo:.6g} <= 1 + resolution ({1 + resolution:g})"
            if lo <= 1 + resolution
            else f"faster, but speedup {s:.6g} short of the threshold {threshold:g}"
        )
    if verdict == "slower" and not (hi < 1 / (1 + resolution) and s < 1 and practical(s, threshold)):
        problems.append(
            f"slower, but upper bound {hi:.6g} >= 1/(1 + resolution) ({1 / (1 + resolution):.6g})"
            if hi >= 1 / (1 + resolution)
            else f"slower, but speedup {s:.6g} short of the threshold {threshold:g}"
        )
    if verdict == "same":
        if not (lo <= 1 + threshold and hi >= 1 / (1 + threshold)):
            problems.append(f"same, but [{lo:.6g}, {hi:.6g}] misses the practical band")
        if outside(lo, hi, resolution) and practical(s, threshold):
            problems.append(f"same, but [{lo:.6g}, {hi:.6g}] clears the resolution band at speedup {s:.6g}")
    return problems


def half_unit(text: str) -> float:
    """Half a unit of the last printed digit: the most a printed number can be off by rounding."""
    text = text.replace(",", "")
    mantissa, _, exponent = text.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (-decimals + (int(exponent) if exponent else 0))


def value(text: str) -> float:
    return float(text.replace(",", ""))


@dataclass
class Printed:
    """A speedup and its interval as printed, each with its rounding."""

    point: str
    lo: str | None = None
    hi: str | None = None

    def range(self, which: str) -> tuple[float, float]:
        text = getattr(self, which)
        h = half_unit(text)
        return value(text) - h, value(text) + h

    def show(self) -> str:
        return f"{self.point}× [{self.lo}, {self.hi}]" if self.lo is not None else f"{self.point}×"


def printed_problems(
    verdict: str, printed: Printed | None, resolution: float, threshold: float
) -> tuple[list[str], list[str]]:
    """(contradictions, edges) of a printed verdict beside its printed interval. A contradiction: no
    values that round to the printed ones satisfy the rule. An edge: the printed values themselves
    do not, values that round to them do. `verdict` may also be "tied" (not slower)."""
    if verdict == TOO_FEW:
        return ([f"{TOO_FEW} beside {printed.show()}"] if printed is not None else []), []
    if printed is None or printed.lo is None:
        return [f"{verdict} without an interval" + (f" ({printed.show()})" if printed else "")], []
    (p_lo, p_hi), (l_lo, l_hi), (h_lo, h_hi) = (printed.range(w) for w in ("point", "lo", "hi"))
    p, lo, hi = value(printed.point), value(printed.lo), value(printed.hi)
    up, down = 1 + resolution, 1 / (1 + resolution)
    fast, slow = 1 + threshold, 1 / (1 + threshold)

    def judge(possible: bool, as_printed: bool, what: str) -> tuple[list[str], list[str]]:
        if not possible:
            return [what], []
        return ([], []) if as_printed else ([], [what + " (as printed; rounding reconciles it)"])

    results = [judge(l_lo <= p_hi and p_lo <= h_hi, lo <= p <= hi, "speedup outside its interval")]
    if verdict == "faster":
        results.append(judge(l_hi > up, lo > up, f"faster, but lower bound not above {up:g}"))
        results.append(judge(p_hi >= fast, p >= fast, f"faster, but speedup short of {fast:g}"))
    elif verdict == "slower":
        results.append(judge(h_lo < down, hi < down, f"slower, but upper bound not below {down:.6g}"))
        results.append(judge(p_lo <= slow, p <= slow, f"slower, but speedup short of {slow:.6g}"))
    elif verdict == "same":
        results.append(
            judge(
                l_lo <= fast and h_hi >= slow,
                lo <= fast and hi >= slow,
                "same, but the interval misses the practical band",
            )
        )
        may_be_undecided = (l_lo <= up and h_hi >= down) or (p_lo < fast and p_hi > slow)
        is_undecided = (lo <= up and hi >= down) or (slow < p < fast)
        results.append(
            judge(
                may_be_undecided,
                is_undecided,
                "same, but the interval clears the resolution band at a practical speedup",
            )
        )
    elif verdict == "tied":
        results.append(
            judge(h_hi >= down or p_hi > slow, hi >= down or p > slow, "tied, but the interval says slower")
        )
    else:
        return [f"unknown verdict {verdict!r}"], []
    return [c for r in results for c in r[0]], [e for r in results for e in r[1]]


def agrees_with(printed: Printed | None, speedup: Any, ci: Any) -> bool:
    """The printed numbers are the object's numbers, rounded."""
    if printed is None:
        return speedup is None or ci is None
    if speedup is None:
        return False
    pairs = [(printed.point, speedup)]
    if printed.lo is not None:
        if ci is None:
            return False
        pairs += [(printed.lo, ci[0]), (printed.hi, ci[1])]
    elif ci is not None:
        return False
    return all(abs(value(t) - float(x)) <= half_unit(t) * (1 + 1e-9) + 1e-12 for t, x in pairs)


def mark_verdict(printed: Printed, mark: bool) -> str:
    """The verdict a printed speedup stands for: the mark is faster or slower by its side of 1."""
    if not mark:
        return "same"
    return "faster" if value(printed.point) > 1 else "slower"


def find_speedup(text: str) -> tuple[Printed | None, bool]:
    match = SPEEDUP.search(text)
    if not match:
        return None, False
    return Printed(match["point"], match["lo"], match["hi"]), bool(match["mark"])


def level_text(confidence: float) -> str:
    """quality.level: 3 significant digits, more where 3 would round to 100%."""
    for digits in range(3, 9):
        text = f"{100 * confidence:.{digits}g}"
        if float(text) < 100:
            return f"{text}%"
    return f"{100 * confidence}%"


# ------------------------------------------------------------------------------------ the files


class Run:
    def __init__(self, root: Path) -> None:
        results = root / "results"
        self.compares = {
            d["shape"]: d
            for d in (json.loads(p.read_text()) for p in sorted((results / "compare").glob("*.json")))
        }
        self.autotune = json.loads((results / "report" / "autotune.json").read_text())
        self.headline = json.loads((results / "report" / "headline.json").read_text())
        self.summary = pd.read_csv(results / "report" / "summary.csv")
        self.report = (results / "report" / "report.md").read_text(encoding="utf-8")
        self.alpha = float(self.autotune.get("alpha", ALPHA))
        self.family = int(self.autotune.get("family") or 1)
        self.raw = {
            (shape, c["candidate"]): c for shape, d in self.compares.items() for c in d["comparisons"]
        }
        self.corrected = {(c["shape"], c["candidate"]): c for c in self.autotune["reference"]["comparisons"]}
        self.rivals = {(s["shape"], r["candidate"]): r for s in self.autotune["shapes"] for r in s["rivals"]}
        self.fastest = {s["shape"]: (s["fastest"] or {}).get("candidate") for s in self.autotune["shapes"]}

    def band(self, shape: str) -> tuple[float, float]:
        method = (self.compares.get(shape) or {}).get("method") or {}
        return float(method.get("resolution", RESOLUTION)), float(method.get("threshold", THRESHOLD))

    def shape_alpha(self, shape: str) -> float:
        method = (self.compares.get(shape) or {}).get("method") or {}
        return float(method.get("alpha", self.alpha))


def close(a: Any, b: Any, rel: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, list | tuple):
        return (
            isinstance(b, list | tuple) and len(a) == len(b) and all(close(x, y, rel) for x, y in zip(a, b))
        )
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=1e-15)


def check_exact(
    chk: Checker, source: str, where: str, verdict: Any, speedup: Any, ci: Any, band: tuple
) -> None:
    chk.count(source)
    for problem in exact_problems(verdict, speedup, ci, *band):
        chk.add(source, where, "contradiction", problem)


def check_p(chk: Checker, source: str, where: str, p: Any, ci: Any, alpha: float, resolution: float) -> None:
    """p < alpha exactly when the interval (at the same correction) leaves the resolution band."""
    if p is None or ci is None or abs(float(p) - alpha) < 1e-9:
        return
    if (float(p) < alpha) != outside(ci[0], ci[1], resolution):
        chk.add(
            source,
            where,
            "contradiction",
            f"p {float(p):.3g} {'<' if float(p) < alpha else '>='} alpha {alpha:g}, but the interval "
            f"[{ci[0]:.6g}, {ci[1]:.6g}] {'meets' if float(p) < alpha else 'leaves'} the resolution band",
        )


def check_compare_json(chk: Checker, run: Run) -> None:
    source = "json/compare"
    for shape, doc in run.compares.items():
        band, alpha = run.band(shape), run.shape_alpha(shape)
        for c in doc["comparisons"]:
            where = f"{shape}: {c['candidate']} vs {c['baseline']}"
            check_exact(chk, source, where, c["verdict"], c["speedup"], c["speedup_ci"], band)
            check_p(chk, source, where, c.get("p_value"), c["speedup_ci"], alpha, band[0])
            ci = c["speedup_ci"]
            if ci is not None:
                if bool(c.get("significant")) != outside(ci[0], ci[1], band[0]):
                    chk.add(source, where, "contradiction", f"significant={c.get('significant')} beside {ci}")
                if "practical" in c and bool(c["practical"]) != practical(c["speedup"], band[1]):
                    chk.add(
                        source,
                        where,
                        "contradiction",
                        f"practical={c['practical']} at speedup {c['speedup']}",
                    )
                if not close(c.get("confidence"), 1 - alpha):
                    chk.add(source, where, "mismatch", f"confidence {c.get('confidence')} is not 1 - alpha")
            elif c["verdict"] != TOO_FEW or c.get("p_value") is not None or c.get("speedup") is not None:
                chk.add(source, where, "contradiction", "no interval, yet a speedup or p-value or a verdict")


def check_autotune_json(chk: Checker, run: Run) -> None:
    source = "json/autotune"
    want = 1 - run.alpha / run.family
    for (shape, candidate), entry in run.corrected.items():
        where = f"{shape}: {candidate} vs the reference (corrected)"
        raw = run.raw.get((shape, candidate))
        if raw is None:
            chk.add(source, where, "mismatch", "no such comparison in the compare file")
            continue
        band = run.band(shape)
        check_exact(chk, source, where, entry["verdict"], raw["speedup"], entry["speedup_ci"], band)
        check_p(chk, source, where, entry.get("p_adjusted"), entry["speedup_ci"], run.alpha, band[0])
        if entry["speedup_ci"] is not None and not close(entry["confidence"], want):
            chk.add(
                source, where, "mismatch", f"confidence {entry['confidence']} is not 1 - alpha/{run.family}"
            )
        if raw["p_value"] is not None and not close(
            entry["p_adjusted"], min(1.0, run.family * raw["p_value"])
        ):
            chk.add(
                source, where, "mismatch", f"p_adjusted {entry['p_adjusted']} is not min(1, {run.family} p)"
            )
    rival_lists = [(s["shape"], s["rivals"], "autotune") for s in run.autotune["shapes"]]
    for family in (run.autotune.get("configurations") or {}).get("families", []):
        rival_lists += [
            (s["shape"], s["rivals"], f"configurations of {family['family']}") for s in family["shapes"]
        ]
    for shape, rivals, what in rival_lists:
        for r in rivals:
            where = f"{shape}: {r['candidate']} vs the fastest ({what}, corrected)"
            band = run.band(shape)
            check_exact(chk, source, where, r["verdict"], r["speedup"], r["speedup_ci"], band)
            check_p(chk, source, where, r.get("p_adjusted"), r["speedup_ci"], run.alpha, band[0])
            if r["tied"] is not (r["verdict"] != "slower"):
                chk.add(source, where, "contradiction", f"tied={r['tied']} beside verdict {r['verdict']}")
    # the pair (fastest, reference) is one comparison: autotune shows it twice, once each way round
    mirror = {"faster": "slower", "slower": "faster", "same": "same", TOO_FEW: TOO_FEW}
    for shape, best in run.fastest.items():
        reference = (run.compares.get(shape) or {}).get("reference")
        entry, rival = run.corrected.get((shape, best)), run.rivals.get((shape, reference))
        if entry is None or rival is None:
            continue
        chk.count("json/autotune pairs")
        where = f"{shape}: {best} vs {reference}, both ways round"
        if mirror[entry["verdict"]] != rival["verdict"]:
            chk.add(source, where, "mismatch", f"{entry['verdict']} one way, {rival['verdict']} the other")
        ci, back = entry["speedup_ci"], rival["speedup_ci"]
        if (ci is None) != (back is None) or (
            ci is not None and not close(ci, [1 / back[1], 1 / back[0]], 1e-6)
        ):
            chk.add(source, where, "mismatch", f"intervals {ci} and {back} are not each other's inverse")


def check_headline_json(chk: Checker, run: Run) -> None:
    source = "json/headline"
    ties = {
        s["shape"]: sorted(r["candidate"] for r in s["rivals"] if r["tied"]) for s in run.autotune["shapes"]
    }

    def one(where: str, shape: str, candidate: str, item: dict[str, Any]) -> None:
        verdict = item.get("verdict")
        if verdict in (None, "reference"):
            return
        check_exact(chk, source, where, verdict, item["speedup"], item["ci"], run.band(shape))
        if item.get("significant") is not (verdict in ("faster", "slower")):
            chk.add(source, where, "contradiction", f"significant={item.get('significant')} beside {verdict}")
        entry = run.corrected.get((shape, candidate))
        raw = run.raw.get((shape, candidate))
        if entry is not None and (entry["verdict"] != verdict or not close(entry["speedup_ci"], item["ci"])):
            chk.add(
                source,
                where,
                "mismatch",
                f"{verdict} {item['ci']}; autotune.json: {entry['verdict']} {entry['speedup_ci']}",
            )
        if raw is not None and not close(raw["speedup"], item["speedup"]):
            chk.add(source, where, "mismatch", f"speedup {item['speedup']}; compare file: {raw['speedup']}")

    for s in run.headline["shapes"]:
        one(f"{s['shape']}: fastest {s['fastest']}", s["shape"], s["fastest"], s)
        if sorted(s["tied"]) != ties.get(s["shape"], []):
            chk.add(
                source, s["shape"], "mismatch", f"tied {s['tied']}; autotune.json: {ties.get(s['shape'])}"
            )
    for row in run.headline["matrix"]["rows"]:
        for candidate, cell in row["cells"].items():
            one(f"{row['shape']}: {candidate} (matrix)", row["shape"], candidate, cell)


def check_summary_csv(chk: Checker, run: Run) -> None:
    source = "csv/summary"
    frame = run.summary
    for row in frame.itertuples(index=False):
        if row.candidate == row.reference or pd.isna(row.verdict):
            continue
        where = f"{row.shape}: {row.candidate}"
        lo, hi = row.speedup_ci_lo, row.speedup_ci_hi
        ci = None if pd.isna(lo) or pd.isna(hi) else [float(lo), float(hi)]
        speedup = None if pd.isna(row.speedup) else float(row.speedup)
        band = run.band(row.shape)
        check_exact(chk, source, where, row.verdict, speedup, ci, band)
        p_adjusted = None if pd.isna(row.p_adjusted) else float(row.p_adjusted)
        check_p(chk, source, where, p_adjusted, ci, run.alpha, band[0])
        entry = run.corrected.get((row.shape, row.candidate))
        if entry is not None and (entry["verdict"] != row.verdict or not close(entry["speedup_ci"], ci)):
            chk.add(
                source,
                where,
                "mismatch",
                f"{row.verdict} {ci}; autotune.json: {entry['verdict']} {entry['speedup_ci']}",
            )
    # every comparison with the reference has its row
    shown = {(r.shape, r.candidate) for r in frame.itertuples(index=False) if not pd.isna(r.verdict)}
    for key in run.raw:
        if run.raw[key]["baseline"] == run.compares[key[0]]["reference"] and key not in shown:
            chk.add(
                source,
                f"{key[0]}: {key[1]}",
                "mismatch",
                "a comparison with the reference has no verdict in summary.csv",
            )


# ----------------------------------------------------------------------------- printed text


def check_printed(
    chk: Checker,
    source: str,
    where: str,
    verdict: str,
    printed: Printed | None,
    band: tuple[float, float],
    expected: tuple[str | None, Any, Any] | None = None,
    line: str = "",
) -> None:
    """One printed verdict against its printed interval, and against the object it was printed from
    (`expected`: that object's verdict, speedup and interval), when known."""
    chk.count(source)
    shown = f"{line.strip()!r}" if line else ""
    contradictions, edges = printed_problems(verdict, printed, *band)
    for text in contradictions:
        chk.add(source, where, "contradiction", f"{text}: {shown}")
    for text in edges:
        chk.add(source, where, "edge", f"{text}: {shown}")
    if expected is not None:
        want, speedup, ci = expected
        same_verdict = want == verdict or (verdict == "tied" and want != "slower")
        if not same_verdict or not agrees_with(printed, speedup, ci):
            chk.add(
                source,
                where,
                "mismatch",
                f"printed {verdict} {printed.show() if printed else ''}; its object: {want} {speedup} {ci}: {shown}",
            )


def check_levels(chk: Checker, source: str, text: str, run: Run) -> None:
    """Every "N% intervals[, corrected for the run's M comparisons]" names a level the files record."""
    raw_levels = {level_text(1 - run.shape_alpha(s)) for s in run.compares}
    corrected_level = level_text(1 - run.alpha / run.family)
    for match in LEVEL.finditer(text):
        chk.count(f"{source} levels")
        said = f"{match['level']}%"
        if match["family"] is not None:
            ok = int(match["family"]) == run.family and said == corrected_level
            want = f"{corrected_level} for {run.family}"
        elif "this shape alone" in match.group(0):
            ok, want = said in raw_levels, " or ".join(sorted(raw_levels))
        else:
            ok = said in raw_levels | {corrected_level}
            want = f"{' or '.join(sorted(raw_levels))} or {corrected_level}"
        if not ok:
            chk.add(f"{source} levels", match.group(0), "mismatch", f"the files say {want}")
    for match in CORRECTION.finditer(text):
        chk.count(f"{source} levels")
        if int(match["family"]) != run.family or f"{match['level']}%" != corrected_level:
            chk.add(
                f"{source} levels",
                match.group(0),
                "mismatch",
                f"the files say {corrected_level} for {run.family}",
            )


def parse_terminal(chk: Checker, run: Run, text: str) -> None:
    """The per-shape lines (each comparison alone, at 1 - alpha, verdict in words) and the headline at
    the end (corrected, `*` for faster or slower)."""
    lines = text.splitlines()
    header = re.compile(r"^(?P<shape>\S+) \(reference (?P<reference>\S+?)(?:; .*)?\):$")
    seen: set[tuple[str, str]] = set()
    shape = None
    for i, line in enumerate(lines):
        if match := header.match(line):
            shape = match["shape"] if match["shape"] in run.compares else None
            continue
        if shape is None:
            continue
        if not line.startswith("  "):
            shape = None
            continue
        parts = line.split()
        candidate = parts[0] if parts else ""
        comp = run.raw.get((shape, candidate))
        if comp is None:
            continue  # the reference, a skipped candidate, or the shape's measurement line
        seen.add((shape, candidate))
        where = f"line {i + 1}: {shape}: {candidate}"
        printed, _ = find_speedup(line)
        words = re.search(r"\] (faster|slower|same)\b", line)
        if TOO_FEW in line and printed is None:
            verdict = TOO_FEW
        elif words:
            verdict = words[1]
        else:
            bare = re.search(r"([\d.,]+)× (faster|slower|same)\b", line)  # a verdict with no interval
            verdict = bare[2] if bare else "(none)"
            printed = Printed(bare[1]) if bare else None
        expected = (comp["verdict"], comp["speedup"], comp["speedup_ci"])
        check_printed(chk, "terminal/per-shape", where, verdict, printed, run.band(shape), expected, line)
    for key in run.raw:
        if key not in seen:
            chk.add(
                "terminal/per-shape",
                f"{key[0]}: {key[1]}",
                "mismatch",
                "comparison not printed after its shape",
            )

    # the headline: from "fastest correct candidate per shape" to "candidates: shapes won, tied, failed"
    by_shape = {s["shape"]: s for s in run.headline["shapes"]}
    start = next(
        (i for i, line in enumerate(lines) if line.startswith("fastest correct candidate per shape")), None
    )
    if start is None:
        chk.add("terminal/headline", "-", "mismatch", "no headline in the terminal log")
    else:
        printed_shapes = set()
        for i in range(start + 1, len(lines)):
            line = lines[i]
            if line.startswith("candidates:"):
                break
            parts = line.split()
            if len(parts) < 2 or parts[0] not in by_shape:
                continue
            s = by_shape[parts[0]]
            printed_shapes.add(parts[0])
            where = f"line {i + 1}: {s['shape']}: fastest {parts[1]}"
            if parts[1] != s["fastest"]:
                chk.add("terminal/headline", where, "mismatch", f"headline.json's fastest is {s['fastest']}")
            printed, mark = find_speedup(line)
            if printed is None and TOO_FEW in line:
                verdict = TOO_FEW
            elif printed is None:
                if s["verdict"] in (None, "reference"):
                    continue  # the reference itself, or nothing timed
                bare = re.search(r"([\d.,]+)×", line)
                verdict, printed = ("(no interval)", Printed(bare[1]) if bare else None)
            else:
                verdict = mark_verdict(printed, mark)
            check_printed(chk, "terminal/headline", where, verdict, printed, run.band(s["shape"]),
                          (s["verdict"], s["speedup"], s["ci"]), line)  # fmt: skip
            tied = re.search(r"\(tied: (.*)\)\s*$", line)
            if sorted(tied[1].split(", ") if tied else []) != sorted(s["tied"]):
                chk.add("terminal/headline", where, "mismatch", f"tied as printed differs from {s['tied']}")
        for name in by_shape.keys() - printed_shapes:
            chk.add("terminal/headline", name, "mismatch", "shape missing from the terminal's headline")
    check_levels(chk, "terminal", text, run)


def md_cells(line: str) -> list[str]:
    """A Markdown table row's cells, unescaped (formatting.md) and without bold."""
    cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [re.sub(r"\\(.)", r"\1", c).replace("**", "").strip() for c in cells]


def md_tables(text: str) -> list[tuple[str, list[str], list[tuple[int, list[str]]]]]:
    """(the heading above, headers, rows) of every table; each row as (its line number, its cells)."""
    lines = text.splitlines()
    tables, heading, i = [], "", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = re.sub(r"\\(.)", r"\1", line.lstrip("#").strip())
        if line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|( ?:?-+:? ?\|)+\s*$", lines[i + 1]):
            headers, rows = md_cells(line), []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append((i + 1, md_cells(lines[i])))
                i += 1
            tables.append((heading, headers, rows))
            continue
        i += 1
    return tables


def cell_verdict(cell: str) -> tuple[str | None, Printed | None]:
    """The verdict a report cell shows beside its interval (None: the cell shows none)."""
    printed, mark = find_speedup(cell)
    if printed is not None:
        return mark_verdict(printed, mark), printed
    if cell.startswith(TOO_FEW):
        return TOO_FEW, None
    return None, None


def parse_report(chk: Checker, run: Run, text: str) -> None:
    by_shape = {s["shape"]: s for s in run.headline["shapes"]}
    matrix = {row["shape"]: row["cells"] for row in run.headline["matrix"]["rows"]}
    summary = {(r.shape, r.candidate): r for r in run.summary.itertuples(index=False)}
    seen_results: set[tuple[str, str]] = set()
    for heading, headers, rows in md_tables(text):
        if headers[:3] == [
            "shape",
            "fastest",
            "speedup vs " + str(run.headline.get("reference")) + " [interval]",
        ]:
            source = "report/headline"
            for n, row in rows:
                s = by_shape.get(row[0])
                verdict, printed = cell_verdict(row[2])
                if s is None or verdict is None:
                    continue
                check_printed(chk, source, f"line {n}: {row[0]}: fastest {row[1]}", verdict, printed, run.band(row[0]),
                              (s["verdict"], s["speedup"], s["ci"]), "| " + " | ".join(row) + " |")  # fmt: skip
        elif (
            headers
            and headers[0] == "shape"
            and set(headers[1:]) <= set(run.headline["matrix"]["candidates"])
            and len(headers) > 1
        ):
            source = "report/matrix"
            for n, row in rows:
                for candidate, cell_text in zip(headers[1:], row[1:]):
                    cell = (matrix.get(row[0]) or {}).get(candidate)
                    verdict, printed = cell_verdict(cell_text)
                    if verdict is None or cell is None:
                        continue
                    check_printed(chk, source, f"line {n}: {row[0]}: {candidate}", verdict, printed, run.band(row[0]),
                                  (cell["verdict"], cell["speedup"], cell["ci"]), cell_text)  # fmt: skip
        elif any(h.startswith("speedup vs ") for h in headers) and headers[0] == "candidate":
            source = "report/results"
            shape = heading.split(" (")[0]
            col = next(i for i, h in enumerate(headers) if h.startswith("speedup vs "))
            p_col = headers.index("p (adjusted)") if "p (adjusted)" in headers else None
            for n, row in rows:
                candidate = re.sub(r" \(fastest\)$", "", row[0])
                verdict, printed = cell_verdict(row[col])
                if verdict is None:
                    continue
                r = summary.get((shape, candidate))
                expected = None
                if r is not None:
                    ci = None if pd.isna(r.speedup_ci_lo) else [r.speedup_ci_lo, r.speedup_ci_hi]
                    expected = (r.verdict, None if pd.isna(r.speedup) else r.speedup, ci)
                seen_results.add((shape, candidate))
                where = f"line {n}: {shape}: {candidate}"
                check_printed(chk, source, where, verdict, printed, run.band(shape), expected, row[col])
                if p_col is not None:
                    check_printed_p(
                        chk, source, where, verdict, printed, row[p_col], run.alpha, run.band(shape)
                    )
        elif headers and headers[0] == "shape" and any(h.startswith("tied: slower by") for h in headers):
            source = "report/autotune"
            col = next(i for i, h in enumerate(headers) if h.startswith("tied: slower by"))
            slower_col = headers.index("significantly slower") if "significantly slower" in headers else None
            for n, row in rows:
                shape = row[0]
                for part in [] if row[col] in ("none", "—") else split_ties(row[col]):
                    candidate = part.split(": ")[0]
                    rival = run.rivals.get((shape, candidate))
                    printed, _ = find_speedup(part)
                    verdict = TOO_FEW if TOO_FEW in part and printed is None else "tied"
                    expected = (
                        None if rival is None else (rival["verdict"], rival["speedup"], rival["speedup_ci"])
                    )
                    where = f"line {n}: {shape}: {candidate} tied"
                    check_printed(chk, source, where, verdict, printed, run.band(shape), expected, part)
                    p_text = re.search(r", p ([\d.e+-]+)$", part)
                    if p_text:
                        check_printed_p(
                            chk, source, where, verdict, printed, p_text[1], run.alpha, run.band(shape)
                        )
                if slower_col is not None:
                    named = set() if row[slower_col] in ("none", "—") else set(row[slower_col].split(", "))
                    untied = {c for (s, c), r in run.rivals.items() if s == shape and not r["tied"]}
                    chk.count("report/autotune slower lists")
                    if named != untied:
                        chk.add(
                            source,
                            f"line {n}: {shape}: significantly slower",
                            "mismatch",
                            f"printed {sorted(named)}; autotune.json {sorted(untied)}",
                        )
    for key, r in summary.items():
        if not pd.isna(r.verdict) and r.candidate != r.reference and key not in seen_results:
            chk.add(
                "report/results",
                f"{key[0]}: {key[1]}",
                "mismatch",
                "comparison missing from the results tables",
            )
    check_levels(chk, "report", text, run)


def check_printed_p(
    chk: Checker,
    source: str,
    where: str,
    verdict: str,
    printed: Printed | None,
    p_text: str,
    alpha: float,
    band: tuple[float, float],
) -> None:
    """A printed (adjusted) p-value beside the printed interval of the same comparison: p < alpha
    exactly when the interval leaves the resolution band, and a mark (faster, slower) needs p < alpha."""
    if printed is None or printed.lo is None or not re.fullmatch(r"[\d.]+(e[+-]?\d+)?", p_text):
        return
    p, h = value(p_text), half_unit(p_text)
    l_lo, l_hi = printed.range("lo")
    h_lo, h_hi = printed.range("hi")
    lo, hi = value(printed.lo), value(printed.hi)
    up, down = 1 + band[0], 1 / (1 + band[0])
    below_alpha = (p + h < alpha, p < alpha)  # (certainly, as printed)
    above_alpha = (p - h >= alpha, p >= alpha)
    meets_band = (l_hi <= up and h_lo >= down, lo <= up and hi >= down)
    leaves_band = (l_lo > up or h_hi < down, lo > up or hi < down)
    problems = [
        (verdict in ("faster", "slower"), above_alpha, f"marked {verdict}, but p {p_text} >= alpha {alpha:g}"),
        (True, (below_alpha[0] and meets_band[0], below_alpha[1] and meets_band[1]),
         f"p {p_text} < alpha {alpha:g}, but the interval meets the resolution band"),
        (True, (above_alpha[0] and leaves_band[0], above_alpha[1] and leaves_band[1]),
         f"p {p_text} >= alpha {alpha:g}, but the interval leaves the resolution band"),
    ]  # fmt: skip
    for applies, (certain, as_printed), text in problems:
        if applies and certain:
            chk.add(source, where, "contradiction", text)
        elif applies and as_printed:
            chk.add(source, where, "edge", text + " (as printed; rounding reconciles it)")


def split_ties(text: str) -> list[str]:
    """`a: 0.9%, 0.991× [0.972, 1.01], p 1.0; b: ...`: one part per tied candidate (a candidate's name
    may hold neither "; " nor ": ")."""
    return [part for part in text.split("; ") if part]


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="the workflow directory (holds results/)")
    parser.add_argument("terminal", type=Path, help="the run's saved terminal output")
    parser.add_argument("--strict", action="store_true", help="fail on edge cases too")
    parser.add_argument("--json", type=Path, help="write the counts and findings here")
    args = parser.parse_args(argv)
    terminal = (
        args.terminal
        if args.terminal.is_absolute() or not (args.run_dir / args.terminal).exists()
        else args.run_dir / args.terminal
    )

    run = Run(args.run_dir)
    chk = Checker(strict=args.strict)
    check_compare_json(chk, run)
    check_autotune_json(chk, run)
    check_headline_json(chk, run)
    check_summary_csv(chk, run)
    parse_report(chk, run, run.report)
    parse_terminal(chk, run, terminal.read_text(encoding="utf-8", errors="replace"))

    raw = pd.Series([c["verdict"] for c in run.raw.values()]).value_counts()
    corrected = pd.Series([c["verdict"] for c in run.corrected.values()]).value_counts()
    kinds = ("contradiction", "mismatch", "edge")
    print(
        f"run: {args.run_dir}  (alpha {run.alpha:g}, family {run.family}, corrected level {level_text(1 - run.alpha / run.family)})"
    )
    print(f"verdicts in the compare files: {', '.join(f'{v} {n}' for v, n in raw.items())}")
    print(f"corrected (autotune.json):     {', '.join(f'{v} {n}' for v, n in corrected.items())}")
    width = max(map(len, chk.counts), default=10)
    print(f"{'source':<{width}}  checked  contradictions  mismatches  edges")
    for source, n in chk.counts.items():
        found = [sum(1 for f in chk.findings if f.source == source and f.kind == k) for k in kinds]
        print(f"{source:<{width}}  {n:>7}  {found[0]:>14}  {found[1]:>10}  {found[2]:>5}")
    total = {k: sum(1 for f in chk.findings if f.kind == k) for k in kinds}
    print(
        f"{'total':<{width}}  {sum(chk.counts.values()):>7}  {total['contradiction']:>14}  {total['mismatch']:>10}  {total['edge']:>5}"
    )
    for kind in kinds:
        listed = [f for f in chk.findings if f.kind == kind]
        if listed:
            print(f"\n{PLURAL[kind]} ({len(listed)}):")
            for f in listed:
                print(f"  [{f.source}] {f.where}: {f.text}")
    if args.json:
        args.json.write_text(
            json.dumps({"counts": chk.counts, "findings": [asdict(f) for f in chk.findings]}, indent=1)
        )
    outcome = "FAIL" if chk.failed() else "OK"
    print(
        f"\n{outcome}: {total['contradiction']} contradictions, {total['mismatch']} mismatches, {total['edge']} edge cases"
    )
    return 1 if chk.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
