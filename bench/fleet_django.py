"""``make bench-fleet``'s peer: a minimal django-tenants project, generated in a temporary folder.

One shared app holds the tenant model (``customers``, as django-tenants' docs
set it up), one tenant app holds the same ``users`` table as this project's
first migration (``accounts``), and ``makemigrations`` writes its migrations,
as a Django user's would be. Every command runs as ``python -m django`` with
the benchmark's own interpreter: Django and django-tenants are pinned in
requirements-bench.txt. The database's name, port and password reach the
settings through the environment, so no file holds the password.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# The same bound as the fleet's group (parallel = 4): both hold at most 4 migrating connections.
PROCESSES = 4
SETTINGS = f"""
import os

SECRET_KEY = "bench"
# django-tenants imports ContentType, so contenttypes is a shared app.
SHARED_APPS = ["django_tenants", "django.contrib.contenttypes", "customers"]
TENANT_APPS = ["accounts"]
INSTALLED_APPS = SHARED_APPS + TENANT_APPS
TENANT_MODEL = "customers.Client"
TENANT_DOMAIN_MODEL = "customers.Domain"
DATABASE_ROUTERS = ["django_tenants.routers.TenantSyncRouter"]
DATABASES = {{
    "default": {{
        "ENGINE": "django_tenants.postgresql_backend",
        "NAME": os.environ["BENCH_DATABASE"],
        "USER": os.environ["BENCH_USER"],
        "PASSWORD": os.environ["BENCH_PASSWORD"],
        "HOST": os.environ["BENCH_HOST"],
        "PORT": os.environ["BENCH_PORT"],
    }}
}}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
TENANT_MULTIPROCESSING_MAX_PROCESSES = {PROCESSES}
"""
CUSTOMERS = """
from django.db import models
from django_tenants.models import DomainMixin, TenantMixin


class Client(TenantMixin):
    name = models.CharField(max_length=100, default="")
    auto_create_schema = False  # the benchmark creates the schemas, as it does for this project's


class Domain(DomainMixin):
    pass
"""
# This project's users table (models/user.py), as a Django model.
ACCOUNTS = """
from django.db import models
from django.db.models.functions import Now


class User(models.Model):
    username = models.CharField(max_length=64, unique=True)
    email = models.CharField(max_length=320, unique=True)
    created_at = models.DateTimeField(db_default=Now())
    # pending

    class Meta:
        db_table = "users"
"""
# The additive migration: the same nullable column this project's pending migration adds.
NICKNAME = "    nickname = models.CharField(max_length=32, null=True)\n"


@dataclass(frozen=True)
class Database:
    """Where the peer connects; the password is passed in the environment, never written."""

    host: str
    port: int
    user: str
    password: str


@dataclass(frozen=True)
class DjangoProject:
    site: Path
    database: Database

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "django", *args]

    def env(self, name: str) -> dict[str, str]:
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "settings",
            "PYTHONPATH": str(self.site),
            "BENCH_DATABASE": name,
            "BENCH_USER": self.database.user,
            "BENCH_PASSWORD": self.database.password,
            "BENCH_HOST": self.database.host,
            "BENCH_PORT": str(self.database.port),
        }

    def migrate_schemas(self, executor: str, *extra: str) -> list[str]:
        """``manage.py migrate_schemas``: the public schema, then every tenant's."""
        return self.argv("migrate_schemas", f"--executor={executor}", "--noinput", *extra)

    def run(self, name: str, *args: str) -> None:
        """An untimed setup command; its output is shown only when it fails."""
        done = subprocess.run(
            self.argv(*args), cwd=self.site, env=self.env(name), capture_output=True, text=True
        )
        if done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip())[-800:]
            raise SystemExit(f"bench-fleet: django {' '.join(args)}: {said}")

    def add_pending_migration(self, name: str) -> None:
        """The nullable ``nickname`` column, written by makemigrations as 0002."""
        models = self.site / "accounts" / "models.py"
        models.write_text(models.read_text().replace("    # pending\n", NICKNAME))
        self.run(name, "makemigrations", "accounts")


def create(site: Path, database: Database, name: str) -> DjangoProject:
    """The project with its first migrations (makemigrations needs a database name, not a connection)."""
    for app, models in (("customers", CUSTOMERS), ("accounts", ACCOUNTS)):
        (site / app / "migrations").mkdir(parents=True)
        (site / app / "__init__.py").touch()
        (site / app / "migrations" / "__init__.py").touch()
        (site / app / "models.py").write_text(models)
    (site / "settings.py").write_text(SETTINGS)
    project = DjangoProject(site, database)
    project.run(name, "makemigrations", "customers", "accounts")
    return project
