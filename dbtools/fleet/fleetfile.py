"""The fleet file (TOML): groups in file order, each with its bound, its error policy and its targets.

The whole file is read, checked and expanded (``targets.expand``) before
anything runs, so a mistake anywhere, even in the last group, runs nothing:
one ``FleetError`` naming the group and the key, or TOML's line and column.
A file an earlier group (the canary) or an earlier entry named is skipped, so
``tenants/*.db`` after a canary means "the rest".
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from dbtools.fleet.errors import FleetError
from dbtools.fleet.targets import Target, expand

DEFAULT_PARALLEL = 4
MAX_PARALLEL = 256
GROUP_KEYS = {"name", "parallel", "on_error", "targets"}


class OnError(StrEnum):
    """What a failed target means for the rest of an upgrade."""

    STOP = "stop"  # start nothing more, in this group or any later one
    CONTINUE = "continue"  # the failed one is reported; the rest run


@dataclass(frozen=True)
class Group:
    name: str
    parallel: int
    on_error: OnError
    targets: list[Target]


def load(path: Path) -> list[Group]:
    """Every group and target of the fleet file, checked and expanded, or one FleetError."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FleetError(f"fleet file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetError(f"fleet file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise FleetError(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"group"})
    if unknown:
        raise FleetError(f"{path}: unknown key {unknown[0]!r}; a fleet file holds [[group]] tables only")
    groups = data.get("group")
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) for g in groups):
        raise FleetError(f"{path}: no [[group]] tables; a fleet needs at least one group with targets")
    seen_files: set[Path] = set()
    seen_names: set[str] = set()
    seen_urls: set[tuple[str, str | None]] = set()
    result = []
    for number, raw in enumerate(groups, 1):
        group = _group(path, number, raw, seen_names)
        for index, entry in enumerate(raw["targets"]):
            where = f"{path}: group {number} ({group.name!r}), targets[{index}]"
            for target in expand(path.parent, where, group.name, entry):
                if target.sqlite_path is not None:
                    if target.sqlite_path in seen_files:
                        continue  # named by an earlier group (the canary), or twice by a glob
                    seen_files.add(target.sqlite_path)
                else:
                    key = (target.shown, target.schema)
                    if key in seen_urls:
                        continue
                    seen_urls.add(key)
                group.targets.append(target)
        result.append(group)
    return result


def _group(path: Path, number: int, raw: dict[str, Any], seen: set[str]) -> Group:
    where = f"{path}: group {number}"
    unknown = sorted(set(raw) - GROUP_KEYS)
    if unknown:
        raise FleetError(
            f"{where}: unknown key {unknown[0]!r}; a group takes {', '.join(sorted(GROUP_KEYS))}"
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise FleetError(f"{where}: name is missing or empty; give each group a name")
    if name in seen:
        raise FleetError(f"{where}: name {name!r} is used by an earlier group; names are unique")
    seen.add(name)
    where = f"{where} ({name!r})"
    parallel = raw.get("parallel", DEFAULT_PARALLEL)
    if isinstance(parallel, bool) or not isinstance(parallel, int) or not 1 <= parallel <= MAX_PARALLEL:
        raise FleetError(f"{where}: parallel = {parallel!r} is not a whole number from 1 to {MAX_PARALLEL}")
    on_error = raw.get("on_error", OnError.STOP.value)
    if on_error not in tuple(OnError):
        raise FleetError(f'{where}: on_error = {on_error!r} is neither "stop" nor "continue"')
    targets = raw.get("targets")
    if not isinstance(targets, list) or not targets:
        raise FleetError(f"{where}: targets is missing or empty; list at least one database")
    return Group(name, parallel, OnError(on_error), [])
