"""The fleet room: ``make upgrade|status|check|verify fleet=<file>``, one history on many databases.

It reads a fleet file into groups of targets (SQLite files, PostgreSQL
databases, tenant schemas), then runs the single-target command on each,
forked from the fleet's process, group by group, with a bound on how many run
at once, and reports each target's outcome. It stands on the shared modules
and on ``runtime/`` (what a run executes); nothing but ``dbtools.__main__``
imports it, and it imports no command: each target's run is ``main`` itself,
handed in.
"""
