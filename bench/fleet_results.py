"""``make bench-fleet``'s results: the table and ratios against the goals (bench/fleet.md), and the plot.

Kept apart from the measuring (bench/fleet.py) so the names of the sides and
scenarios, which both use, and the goals are defined once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bench.fleet_django import PROCESSES
from bench.harness import machine

if TYPE_CHECKING:
    from bench.fleet import Measured, Sizes

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "fleet.md"
PLOT = ROOT / "bench" / "fleet.png"

OURS_FLEET = "make upgrade fleet= (parallel = 4)"
DJ_STANDARD = "django-tenants migrate_schemas, standard"
DJ_MULTI = "django-tenants migrate_schemas, multiprocessing (4)"
SHELL_LOOP = "shell loop of make upgrade, one per file"
SINGLE = "make upgrade, one file"
SINGLE_SCHEMA = "make upgrade, one schema (MIGRATION_SCHEMA)"
PG_NOOP = "PostgreSQL, {n} schemas, no-op"
PG_PENDING = "PostgreSQL, {n} schemas, one pending"
SQLITE_NOOP = "SQLite, {n} files, no-op"
SQLITE_PENDING = "SQLite, {n} files, one pending"
SINGLE_NOOP = "SQLite, one file, no-op"
SINGLE_PG_NOOP = "PostgreSQL, one schema, no-op"
PG_GOAL = 20.0  # at least this many times faster than django-tenants' multiprocessing executor
SQLITE_GOAL = 5.0  # the fleet no-op costs at most this many single-target no-ops


@dataclass(frozen=True)
class Profile:
    """One no-op fleet, profiled: its wall time, its targets' own, and the fleet process's hot spots."""

    scenario: str
    wall: float  # the whole command, under cProfile
    profiled: float  # what cProfile saw of the fleet's own process
    fleet_run: float | None  # of which the fleet's run(): loading the file, forking, waiting
    targets: int
    answered: int  # targets answered at head by the fleet's own look, without a run
    target_seconds: float  # the sum of the forked runs' wall times, as the report gives them
    slowest: float
    top: str  # pstats of the fleet's own process, by own time


@dataclass(frozen=True)
class Ratio:
    what: str
    value: float
    goal: str
    met: bool | None  # None: no goal


def ratios(results: dict[tuple[str, str], Measured], sizes: Sizes) -> list[Ratio]:
    out: list[Ratio] = []
    for scenario, goal in ((PG_NOOP, PG_GOAL), (PG_PENDING, None)):
        name = scenario.format(n=sizes.schemas)
        ours = results[(name, OURS_FLEET)].median
        for peer in (DJ_MULTI, DJ_STANDARD):
            value = results[(name, peer)].median / ours
            wanted = goal if goal is not None and peer == DJ_MULTI else None
            out.append(
                Ratio(
                    f"{name}: {peer} / ours",
                    value,
                    f"≥ {wanted:g}x" if wanted else "",
                    None if wanted is None else value >= wanted,
                )
            )
    pg_fleet = results[(PG_NOOP.format(n=sizes.schemas), OURS_FLEET)].median
    pg_single = results[(SINGLE_PG_NOOP, SINGLE_SCHEMA)].median
    out.append(
        Ratio(
            f"{PG_NOOP.format(n=sizes.schemas)}: ours / one single-schema no-op",
            pg_fleet / pg_single,
            "",
            None,
        )
    )
    for scenario in (SQLITE_NOOP, SQLITE_PENDING):
        name = scenario.format(n=sizes.files)
        value = results[(name, SHELL_LOOP)].median / results[(name, OURS_FLEET)].median
        out.append(Ratio(f"{name}: shell loop / ours", value, "", None))
    fleet = results[(SQLITE_NOOP.format(n=sizes.files), OURS_FLEET)].median
    single = results[(SINGLE_NOOP, SINGLE)].median
    value = fleet / single
    out.append(
        Ratio(
            f"{SQLITE_NOOP.format(n=sizes.files)}: ours / one single-target no-op",
            value,
            f"≤ {SQLITE_GOAL:g}x",
            value <= SQLITE_GOAL,
        )
    )
    return out


def write(measured: list[Measured], sizes: Sizes, profiles: list[Profile], elapsed: float) -> None:
    results = {(m.scenario, m.side): m for m in measured}
    lines = [
        "# `make bench-fleet`: one history, many databases",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC} by `make bench-fleet` (bench/fleet.py; its",
        "docstring says how each side is measured). Whole commands, start-up included, timed side by",
        f"side in one run: {sizes.repeat} round(s), sides alternated, the median reported. Each PostgreSQL",
        "run starts from a fresh copy of a template database; peak connections are sampled from",
        "`pg_stat_activity` every 10 ms (the sampler's own connection is to another database).",
        "",
        "| scenario | side | wall time | per target | peak connections |",
        "|---|---|---:|---:|---:|",
    ]
    for m in measured:
        peak = "" if m.peak_connections is None else str(m.peak_connections)
        lines.append(
            f"| {m.scenario} | {m.side} | {m.median:.2f} s | {m.per_target * 1000:.1f} ms | {peak} |"
        )
    lines += ["", "| ratio | measured | goal | met |", "|---|---:|---:|---|"]
    for ratio in ratios(results, sizes):
        met = "" if ratio.met is None else ("yes" if ratio.met else "**no**")
        lines.append(f"| {ratio.what} | {ratio.value:.2f}x | {ratio.goal} | {met} |")
    lines += [
        "",
        "## Where a no-op fleet's time goes",
        "",
        "One no-op fleet of each kind, after a warm-up run, as `python -m dbtools upgrade --fleet=`",
        "with its own process under cProfile (each target's run is forked from it, so cProfile does not",
        "see inside it: the report's per-target times do).",
        "",
        *(line for profile in profiles for line in profile_lines(profile)),
        "Machine:",
        "",
        *(f"- {key}: {value}" for key, value in machine().items()),
        "- bytecode: cached (PYTHONDONTWRITEBYTECODE unset for every command measured, both sides)",
        f"- benchmark wall time: {elapsed / 60:.1f} min, preparation included",
        "",
        "![time per target](fleet.png)",
    ]
    RESULTS.write_text("\n".join(lines) + "\n")
    plot(measured)
    print(f"\nWrote {RESULTS.relative_to(ROOT)} and {PLOT.relative_to(ROOT)}.")


def profile_lines(profile: Profile) -> list[str]:
    run = "" if profile.fleet_run is None else f", of which {profile.fleet_run:.2f} s in the fleet's run()"
    forked = profile.targets - profile.answered
    runs = (
        f"The {forked} forked runs took {profile.target_seconds / forked * 1000:.1f} ms each on average "
        f"(slowest {profile.slowest * 1000:.0f} ms), {profile.target_seconds:.2f} s in all, "
        f"{PROCESSES} at a time."
        if forked
        else "No run was forked."
    )
    return [
        f"**{profile.scenario}**: {profile.wall:.2f} s wall; cProfile saw {profile.profiled:.2f} s of the "
        f"fleet's own process{run} (the rest: start-up and imports). {profile.answered} of the "
        f"{profile.targets} targets were answered at head by the fleet's own look. {runs} "
        "The fleet's own process, by its own time:",
        "",
        "```",
        profile.top.strip(),
        "```",
        "",
    ]


def plot(measured: list[Measured]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot, ticker

    colours = {
        OURS_FLEET: "tab:blue",
        DJ_STANDARD: "tab:red",
        DJ_MULTI: "tab:orange",
        SHELL_LOOP: "tab:purple",
        SINGLE: "tab:green",
        SINGLE_SCHEMA: "tab:green",
    }
    figure, axes = pyplot.subplots(figsize=(9, 0.45 * len(measured) + 1.2))
    labels = [f"{m.scenario}\n{m.side}" for m in measured]
    values = [m.per_target * 1000 for m in measured]
    axes.barh(labels, values, color=[colours.get(m.side, "tab:grey") for m in measured])
    for y, value in enumerate(values):
        axes.text(value, y, f" {value:.1f} ms", va="center", fontsize=8)
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axes.set_xlabel("wall time per target (ms, log scale)")
    axes.set_title("make bench-fleet: wall time per target (blue: make upgrade fleet=)")
    axes.tick_params(axis="y", labelsize=7)
    figure.tight_layout()
    figure.savefig(PLOT, dpi=110)
    pyplot.close(figure)
