"""Alembic's environment (env.py), the helpers it uses, and versions/.

A package so that env.py, ``make stamp`` and the tests share one engine
setup, one lock and one set of guards.
"""
