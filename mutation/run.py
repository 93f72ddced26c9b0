"""Mutation testing of the core by hand (`make mutate`): mutmut runs, this script judges.

mutmut makes and runs the mutants (config in pyproject.toml, [tool.mutmut]); this script then
reads its results, matches every survivor against mutation/equivalents.toml and prints a table
per file. It exits non-zero when a survivor is not explained there, or when a file kills under
the target share of its non-equivalent mutants. An entry names the function and the mutated
source text, never a line number or a mutmut counter, so it still matches after code moves.

    python mutation/run.py protocol/frames.py protocol/records.py   # run, then report
    python mutation/run.py --report-only protocol/frames.py         # report the last run
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EQUIVALENTS = HERE / "equivalents.toml"
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
NAME = re.compile(r"^(?P<module>[\w.]+?)\.x(?:_|ǁ(?P<cls>\w+)ǁ)(?P<func>\w+?)__mutmut_\d+$")


@dataclass(frozen=True)
class Mutant:
    """One mutmut mutant: its name, status and the lines it changes."""

    name: str
    status: str
    module: str = ""
    function: str = ""
    original: str = ""
    mutated: str = ""


@dataclass
class Equivalent:
    """One entry of equivalents.toml."""

    function: str
    original: str
    mutated: str
    why: str
    matched: list[str] = field(default_factory=list)


def normalise(text: str) -> str:
    """Source lines with their indentation and inner runs of spaces dropped."""
    lines = (" ".join(line.split()) for line in text.strip().splitlines())
    return "\n".join(line for line in lines if line)


def mutmut(*args: str) -> str:
    """Run the venv's mutmut in the repository; its stdout."""
    exe = Path(sys.executable).with_name("mutmut")
    proc = subprocess.run([str(exe), *args], cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"mutmut {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def module_of(path: str) -> str:
    """protocol/frames.py -> protocol.frames."""
    p = Path(path)
    if p.suffix != ".py" or not (REPO / p).is_file():
        sys.exit(f"{path}: not a Python file in the repository (did it move?)")
    return ".".join(p.with_suffix("").parts)


def results(modules: list[str]) -> list[Mutant]:
    """Every mutant of ``modules`` from mutmut's last run, with the diff of those not killed."""
    out = []
    for line in mutmut("results", "--all", "true").splitlines():
        name, _, status = line.strip().rpartition(": ")
        m = NAME.match(name)
        if not m or m["module"] not in modules:
            continue
        function = f"{m['cls']}.{m['func']}" if m["cls"] else m["func"]
        if status in KILLED:
            out.append(Mutant(name, status, m["module"], function))
            continue
        minus, plus = [], []
        for diff_line in mutmut("show", name).splitlines():
            if diff_line.startswith(("---", "+++")):
                continue
            if diff_line.startswith("-"):
                minus.append(diff_line[1:])
            elif diff_line.startswith("+"):
                plus.append(diff_line[1:])
        original, mutated = normalise("\n".join(minus)), normalise("\n".join(plus))
        out.append(Mutant(name, status, m["module"], function, original, mutated))
    return out


def load_equivalents() -> list[Equivalent]:
    """The judged survivors; each entry needs function, original, mutated and why."""
    with open(EQUIVALENTS, "rb") as fh:
        data = tomllib.load(fh)
    entries = []
    for i, raw in enumerate(data.get("mutant", [])):
        missing = {"function", "original", "mutated", "why"} - set(raw)
        if missing or not raw["why"].strip():
            sys.exit(f"{EQUIVALENTS.name}: entry {i + 1} lacks {sorted(missing) or ['why']}")
        entries.append(
            Equivalent(
                raw["function"], normalise(raw["original"]), normalise(raw["mutated"]), raw["why"]
            )
        )
    return entries


def explain(mutant: Mutant, entries: list[Equivalent]) -> Equivalent | None:
    """The entry for this survivor: same function (glob allowed) and same mutated text."""
    for entry in entries:
        if (
            fnmatch.fnmatchcase(mutant.function, entry.function)
            and entry.original == mutant.original
            and entry.mutated == mutant.mutated
        ):
            entry.matched.append(mutant.name)
            return entry
    return None


def report(modules: list[str], files: list[str], target: float) -> int:
    """Print the table and the unexplained survivors; the exit status."""
    mutants = results(modules)
    entries = load_equivalents()
    status = 0
    rows = [
        "| file | mutants | killed | equivalent | unexplained | killed / all | killed / not equivalent |",
        "|---|---|---|---|---|---|---|",
    ]
    unexplained: list[Mutant] = []
    for module, path in zip(modules, files, strict=True):
        mine = [m for m in mutants if m.module == module]
        if not mine:
            print(f"{path}: no mutants in mutmut's results (run without --report-only)")
            status = 1
            continue
        killed = sum(m.status in KILLED for m in mine)
        if any(m.status == "not checked" for m in mine):
            print(f"{path}: the last run did not finish (mutants not checked)")
            status = 1
        survivors = [m for m in mine if m.status not in KILLED]
        lost = [m for m in survivors if explain(m, entries) is None]
        unexplained += lost
        equivalent = len(survivors) - len(lost)
        score = 100.0 * killed / max(1, len(mine) - equivalent)
        if score < target:
            status = 1
        rows.append(
            f"| {path} | {len(mine)} | {killed} | {equivalent} | {len(lost)} "
            f"| {100.0 * killed / len(mine):.1f} % | {score:.1f} % |"
        )
    print("\n".join(rows))
    for m in unexplained:
        status = 1
        print(f"\nUNEXPLAINED {m.status}: {m.name} ({m.function})")
        for sign, text in (("-", m.original), ("+", m.mutated)):
            print(f"  {sign} " + text.replace("\n", "\n    "))
    stale = [e for e in entries if not e.matched]
    if stale and len(modules) > 0:
        print(f"\n{len(stale)} entries of {EQUIVALENTS.name} matched no survivor of these files")
        print("(stale if their code is in these files: judge again, or delete them):")
        for e in stale:
            print(f"  {e.function}: {e.original!r} -> {e.mutated!r}")
    print(
        f"\ntarget: {target:g} % of the non-equivalent mutants killed in each file, and every"
        f" survivor explained in {EQUIVALENTS.relative_to(REPO)}"
    )
    return status


def fresh_if_config_changed() -> None:
    """Delete mutmut's working copy when [tool.mutmut] changed: mutmut regenerates mutants only
    for source files that changed, so a new exclusion pattern would otherwise not apply."""
    with open(REPO / "pyproject.toml", "rb") as fh:
        config = repr(tomllib.load(fh)["tool"]["mutmut"])
    stamp = REPO / "mutants" / "kexlab-mutmut-config"
    if stamp.exists() and stamp.read_text(encoding="utf-8") == config:
        return
    shutil.rmtree(REPO / "mutants", ignore_errors=True)
    stamp.parent.mkdir()
    stamp.write_text(config, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="source files to mutate, e.g. protocol/frames.py")
    parser.add_argument("--report-only", action="store_true", help="judge the last run only")
    parser.add_argument("--jobs", type=int, default=1, help="mutmut --max-children (default 1)")
    parser.add_argument(
        "--target", type=float, default=97.0, help="minimum %% of non-equivalent mutants killed"
    )
    args = parser.parse_args()
    modules = [module_of(f) for f in args.files]
    if not args.report_only:
        fresh_if_config_changed()
        env = {**os.environ, "HYPOTHESIS_PROFILE": "mutation"}
        globs = [f"{m}.*" for m in modules]
        cmd = [str(Path(sys.executable).with_name("mutmut")), "run"]
        cmd += ["--max-children", str(args.jobs), *globs]
        if subprocess.run(cmd, cwd=REPO, env=env, check=False).returncode != 0:
            return 1
    return report(modules, args.files, args.target)


if __name__ == "__main__":
    sys.exit(main())
