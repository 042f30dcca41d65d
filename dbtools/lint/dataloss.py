"""Flag migrations whose ``upgrade()`` can lose data, unless they say it is intended.

In the spirit of Atlas's lint and django-migration-linter: dropping a table,
column or constraint, or narrowing a column's type or nullability, is refused
by ``make lint`` unless the migration carries the marker (``dbtools.lint.acknowledgements``)

    acknowledge_destructive = "why losing this is intended"

It reads the operations from the script's syntax tree (``op.*`` and
``batch_op.*`` calls, helpers that ``upgrade()`` calls, and literal SQL given
to ``op.execute``), so comments and the downgrade never trip it. SQL built at
run time is beyond it.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from dbtools.autogenerate.renames import renamed
from dbtools.lint.sqltext import statements, top_level_items

# Integer and text types that only ever widen within their family.
INTEGER_RANK = {"SmallInteger": 0, "SMALLINT": 0, "Integer": 1, "INTEGER": 1, "BigInteger": 2, "BIGINT": 2}
BOUNDED_TEXT = {"String", "VARCHAR", "Unicode", "NVARCHAR", "CHAR", "NCHAR"}
UNBOUNDED_TEXT = {"Text", "TEXT", "UnicodeText", "CLOB"}
ADDED_CONSTRAINT = re.compile(r"\bADD\s+CONSTRAINT\s+(\S+)", re.IGNORECASE)
DROPPED_CONSTRAINT = re.compile(r"\bDROP\s+CONSTRAINT\s+(?:IF\s+EXISTS\s+)?(\S+)", re.IGNORECASE)
DESTRUCTIVE_SQL = re.compile(r"^(DROP\s+(TABLE|VIEW)\b|TRUNCATE\b)", re.IGNORECASE)
# ALTER TABLE [IF EXISTS] [ONLY] name [*] <actions>, as pg_dump writes it too; a DROP among the actions.
_NAME = r'(?:"(?:[^"]|"")*"|[^\s".*]+)'
ALTER_TABLE = re.compile(
    rf"^ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?{_NAME}(?:\s*\.\s*{_NAME})*(?:\s*\*)?\s+(.*)$",
    re.IGNORECASE | re.DOTALL,
)
DROP_ACTION = re.compile(r"^DROP\b", re.IGNORECASE)
# Every row of the table: a DELETE without a WHERE.
DELETE_ALL = re.compile(r"^DELETE\s+FROM\b(?!.*\bWHERE\b)", re.IGNORECASE | re.DOTALL)
# An enum type replaced by a new one (dbtools.autogenerate.portable.EnumValuesOp), and what it restores.
ENUM_RENAMED = re.compile(r"^ALTER\s+TYPE\s+(\S+)\s+RENAME\s+TO\s+\S+$", re.IGNORECASE)
ENUM_CREATED = re.compile(r"^CREATE\s+TYPE\s+(\S+)\s+AS\s+ENUM\s*\((.*)\)$", re.IGNORECASE | re.DOTALL)
ENUM_VALUE_ADDED = re.compile(r"^ALTER\s+TYPE\s+(\S+)\s+ADD\s+VALUE\s+(?:IF\s+NOT\s+EXISTS\s+)?('.*)$", re.I)
COLUMN_RETYPED = re.compile(r"^ALTER\s+TABLE\s+(\S+)\s+ALTER\s+COLUMN\s+(\S+)\s+TYPE\s+(\S+)", re.I)
LITERAL = re.compile(r"'((?:[^']|'')*)'")


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    what: str

    def __str__(self) -> str:
        shown = self.path.relative_to(Path.cwd()) if self.path.is_relative_to(Path.cwd()) else self.path
        return f"{shown}:{self.line}: upgrade() {self.what}"


def scan(tree: ast.Module, path: Path) -> list[Finding]:
    """Every destructive operation ``upgrade()`` runs.

    Dropping a constraint that the same ``upgrade()`` creates (the temporary
    CHECK of an online NOT NULL, ``dbtools.autogenerate.nonblocking``), or creates again under
    its renamed name (``dbtools.autogenerate.renames``), loses nothing.
    """
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    if "upgrade" not in functions:
        return []
    visitor = _Upgrade(path, functions)
    visitor.visit(functions["upgrade"])
    visitor.findings += enum_removals(path, functions["upgrade"], functions.get("downgrade"))
    recreated = {
        finding
        for finding, name in visitor.dropped
        if name in visitor.created
        or any(renamed(name, old, new) in visitor.created for old, new in visitor.renames)
    }
    return [finding for finding in visitor.findings if finding not in recreated]


class _Upgrade(ast.NodeVisitor):
    def __init__(self, path: Path, functions: dict[str, ast.FunctionDef]) -> None:
        self.path = path
        self.functions = functions
        self.seen = {"upgrade"}
        self.batch_tables: dict[str, str] = {}  # batch_op alias -> table
        self.findings: list[Finding] = []
        self.dropped: list[tuple[Finding, str]] = []  # constraint drops, by name
        self.created: set[str] = set()  # constraint names created
        self.renames: list[tuple[str, str]] = []  # (old, new) column and table names
        self.widened_text: set[tuple[str, str]] = set()  # (table, column): varchar longer, or to text
        self.dropped_tables: set[str] = set()
        self.dropped_indexes: dict[str, str] = {}  # index -> its table

    def visit_With(self, node: ast.With) -> None:
        for item in node.items:
            call = item.context_expr
            if _method(call) == "batch_alter_table" and isinstance(item.optional_vars, ast.Name):
                assert isinstance(call, ast.Call)
                self.batch_tables[item.optional_vars.id] = _literal(_arg(call, 0, "table_name"))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in self.functions and func.id not in self.seen:
            self.seen.add(func.id)  # a helper upgrade() calls: its operations count too
            self.visit(self.functions[func.id])
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            table = self.batch_tables.get(func.value.id)
            if table or func.value.id == "op":
                self._record_names(func.attr, node, table)
                what = self._operation(func.attr, node, table)
                if what:
                    self.findings.append(Finding(self.path, node.lineno, what))
                    if func.attr == "drop_constraint":
                        self.dropped.append((self.findings[-1], _literal(_arg(node, 0, "constraint_name"))))
                    for dropped in DROPPED_CONSTRAINT.findall(_sql_text(_arg(node, 0, "sqltext"))):
                        self.dropped.append((self.findings[-1], dropped.strip('"')))
        self.generic_visit(node)

    def _record_names(self, name: str, call: ast.Call, batch_table: str | None) -> None:
        shift = 0 if batch_table else 1
        if name.startswith("create_") and name.endswith(("constraint", "foreign_key", "primary_key")):
            self.created.add(_literal(_arg(call, 0, "constraint_name")))
        elif name == "execute" and not batch_table:
            self.created.update(
                n.strip('"') for n in ADDED_CONSTRAINT.findall(_sql_text(_arg(call, 0, "sqltext")))
            )
        elif name == "drop_table" and not batch_table:
            self.dropped_tables.add(_literal(_arg(call, 0, "table_name")))
        elif name == "drop_index":
            table = batch_table or _literal(_arg(call, 1, "table_name"))
            self.dropped_indexes[_literal(_arg(call, 0, "index_name"))] = table
        elif name == "rename_table" and not batch_table:
            self.renames.append(
                (_literal(_arg(call, 0, "old_table_name")), _literal(_arg(call, 1, "new_table_name")))
            )
        elif name == "alter_column":
            keywords = {kw.arg: kw.value for kw in call.keywords if kw.arg}
            column = _literal(_arg(call, shift, "column_name"))
            if "new_column_name" in keywords:
                self.renames.append((column, _literal(keywords["new_column_name"])))
            old_type, new_type = keywords.get("existing_type"), keywords.get("type_")
            if old_type is not None and new_type is not None and _text_widens(old_type, new_type):
                table = batch_table or _literal(_arg(call, 0, "table_name"))
                self.widened_text.add((table, column))

    def _operation(self, name: str, call: ast.Call, batch_table: str | None) -> str | None:
        # In a batch, the table comes from the `with`, so every argument shifts left by one.
        shift = 0 if batch_table else 1

        def table() -> str:
            return batch_table or _literal(_arg(call, 0, "table_name"))

        if name == "drop_table" and not batch_table:
            return f"drops table {table()}"
        if name == "drop_column":
            return f"drops column {table()}.{_literal(_arg(call, shift, 'column_name'))}"
        if name == "drop_constraint":
            constraint = _literal(_arg(call, 0, "constraint_name"))
            on = batch_table or _literal(_arg(call, 1, "table_name"))
            return f"drops constraint {constraint} on {on}"
        if name == "alter_column":
            return _narrowing(call, f"{table()}.{_literal(_arg(call, shift, 'column_name'))}")
        if name == "execute" and not batch_table:
            return _destructive_sql(_arg(call, 0, "sqltext"))
        return None


def enum_removals(path: Path, upgrade: ast.FunctionDef, downgrade: ast.FunctionDef | None) -> list[Finding]:
    """An enum type replaced by one without some of its values, and the rows that would be left holding them.

    Adding a value (``ALTER TYPE ... ADD VALUE``) loses nothing. Replacing the
    type (renamed away, created again, each column cast to it) removes the
    values the new type lacks: the cast fails on every row still holding one,
    until they are updated or deleted. Which values those are, the downgrade
    says (it adds them back, or creates the type with them); when it does not,
    every value outside the new type is named.
    """
    executed = _executed(upgrade)
    replaced = {m[1].strip('"') for _, sql in executed if (m := ENUM_RENAMED.match(sql))}
    columns: dict[str, list[str]] = {}
    for _, sql in executed:
        if (m := COLUMN_RETYPED.match(sql)) is not None:
            table, column, type_name = (part.strip('"') for part in m.groups())
            columns.setdefault(type_name, []).append(f"{table}.{column}")
    restored: dict[str, list[str]] = {}
    for _, sql in _executed(downgrade) if downgrade is not None else []:
        if (m := ENUM_CREATED.match(sql) or ENUM_VALUE_ADDED.match(sql)) is not None:
            restored.setdefault(m[1].strip('"'), []).extend(_literals(m[2]))
    found = []
    for line, sql in executed:
        created = ENUM_CREATED.match(sql)
        name = created[1].strip('"') if created else ""
        if created is None or name not in replaced:
            continue
        kept = _literals(created[2])
        where = columns.get(name) or [f"every column of type {name}"]
        if name in restored:
            removed = [value for value in dict.fromkeys(restored[name]) if value not in kept]
            if not removed:
                continue  # reordered: every value stays
            held = ", ".join(_quoted(value) for value in removed)
            rows = " or ".join(
                f"{column} = {held}" if len(removed) == 1 else f"{column} IN ({held})" for column in where
            )
            what = f"removes {held} from enum type {name}, orphaning the rows where {rows}"
        else:
            kept_text = ", ".join(_quoted(value) for value in kept)
            rows = " or ".join(f"{column} NOT IN ({kept_text})" for column in where)
            what = f"replaces enum type {name} with ({kept_text}), orphaning the rows where {rows}"
        found.append(Finding(path, line, f"{what} (the upgrade fails on them until they are changed)"))
    return found


def _executed(function: ast.FunctionDef) -> list[tuple[int, str]]:
    """Each literal SQL statement ``op.execute`` runs in ``function``, with its line."""
    return [
        (node.lineno, " ".join(_sql_text(_arg(node, 0, "sqltext")).split()))
        for node in ast.walk(function)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "execute"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "op"
    ]


def _literals(text: str) -> list[str]:
    return [value.replace("''", "'") for value in LITERAL.findall(text)]


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _narrowing(call: ast.Call, column: str) -> str | None:
    keywords = {kw.arg: kw.value for kw in call.keywords if kw.arg}
    nullable, existing_nullable = keywords.get("nullable"), keywords.get("existing_nullable")
    if _is_false(nullable) and not _is_false(existing_nullable):
        return f"makes column {column} NOT NULL"
    new_type, old_type = keywords.get("type_"), keywords.get("existing_type")
    if new_type is None:
        return None
    if old_type is None:
        return f"changes the type of {column} without existing_type, so it cannot be shown to widen"
    if _widens(old_type, new_type):
        return None
    return f"narrows column {column} from {ast.unparse(old_type)} to {ast.unparse(new_type)}"


@dataclass(frozen=True)
class LockFacts:
    """What ``upgrade()`` says that squawk, reading one statement at a time, cannot know (``lint.review``)."""

    # (table, column) whose type upgrade() widens within text: a longer varchar,
    # or varchar to text, rewrites nothing and takes its lock for a moment.
    widened_text: frozenset[tuple[str, str]] = frozenset()
    # Indexes upgrade() drops whose table it drops too: the DROP TABLE takes
    # the same lock, and the index would go with it anyway.
    indexes_of_dropped_tables: frozenset[str] = frozenset()


def lock_facts(tree: ast.Module, path: Path) -> LockFacts:
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    if "upgrade" not in functions:
        return LockFacts()
    visitor = _Upgrade(path, functions)
    visitor.visit(functions["upgrade"])
    return LockFacts(
        widened_text=frozenset(visitor.widened_text),
        indexes_of_dropped_tables=frozenset(
            index for index, table in visitor.dropped_indexes.items() if table in visitor.dropped_tables
        ),
    )


def _text_widens(old: ast.expr, new: ast.expr) -> bool:
    (old_name, _), (new_name, _) = _type(old), _type(new)
    return (
        old_name in BOUNDED_TEXT | UNBOUNDED_TEXT
        and new_name in BOUNDED_TEXT | UNBOUNDED_TEXT
        and _widens(old, new)
    )


def _widens(old: ast.expr, new: ast.expr) -> bool:
    if ast.dump(old) == ast.dump(new):
        return True
    (old_name, old_args), (new_name, new_args) = _type(old), _type(new)
    if old_name in INTEGER_RANK and new_name in INTEGER_RANK:
        return INTEGER_RANK[new_name] >= INTEGER_RANK[old_name]
    if old_name in BOUNDED_TEXT | UNBOUNDED_TEXT and new_name in UNBOUNDED_TEXT:
        return True
    if old_name in BOUNDED_TEXT and new_name in BOUNDED_TEXT:
        old_length, new_length = old_args.get("length"), new_args.get("length")
        return new_length is None or (old_length is not None and new_length >= old_length)
    if old_name in ("Numeric", "NUMERIC", "DECIMAL") and new_name == old_name:
        old_p, old_s = old_args.get("precision"), old_args.get("scale", 0)
        new_p, new_s = new_args.get("precision"), new_args.get("scale", 0)
        if new_p is None:
            return True
        return old_p is not None and new_p - new_s >= old_p - old_s and new_s >= old_s
    return False


def _type(node: ast.expr) -> tuple[str, dict[str, int]]:
    """``sa.String(length=64)`` -> ("String", {"length": 64}); positional sizes too."""
    call = node if isinstance(node, ast.Call) else None
    func = call.func if call else node
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    args: dict[str, int] = {}
    if call:
        positional = ("precision", "scale") if name in ("Numeric", "NUMERIC", "DECIMAL") else ("length",)
        for key, value in zip(positional, call.args, strict=False):
            if isinstance(value, ast.Constant) and isinstance(value.value, int):
                args[key] = value.value
        for kw in call.keywords:
            if kw.arg and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, int):
                args[kw.arg] = kw.value.value
    return name, args


def _sql_text(node: ast.expr | None) -> str:
    """The literal SQL an ``op.execute`` call runs, or "" when it is built at run time."""
    if isinstance(node, ast.Call) and node.args and _method(node) == "text":
        node = node.args[0]  # sa.text("...")
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""


def _destructive_sql(node: ast.expr | None) -> str | None:
    for statement in statements(_sql_text(node)):
        if destructive_statement(statement):
            return f"runs destructive SQL: {statement[:60]}"
    return None


def destructive_statement(statement: str) -> bool:
    """Whether one statement (``sqltext.statements``) drops a table, a column or a constraint, or rows.

    ``DROP TABLE``/``VIEW``, ``TRUNCATE``, an ``ALTER TABLE`` with a ``DROP``
    among its actions (``IF EXISTS`` and ``ONLY`` too), a ``DELETE`` without a ``WHERE``.
    """
    if DESTRUCTIVE_SQL.match(statement) or DELETE_ALL.match(statement):
        return True
    altered = ALTER_TABLE.match(statement)
    return altered is not None and any(DROP_ACTION.match(action) for action in top_level_items(altered[1]))


def _method(node: ast.expr) -> str:
    if isinstance(node, ast.Call):
        func = node.func
        return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return ""


def _arg(call: ast.Call, index: int, keyword: str) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    return call.args[index] if len(call.args) > index else None


def _literal(node: ast.expr | None) -> str:
    if isinstance(node, ast.Call) and _method(node) == "f" and node.args:
        node = node.args[0]  # op.f("name")
    if isinstance(node, ast.Constant):
        return str(node.value)
    return ast.unparse(node) if node is not None else "?"


def _is_false(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is False
