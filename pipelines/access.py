"""Access by org unit: PostgreSQL read-only roles that see one subtree of the hierarchy.

A district team should query its own district's data and nothing else. healthpipe does this
with PostgreSQL row-level security, so the restriction holds for every tool that connects
(psql, Superset, a notebook), not only for ours:

- ``audit.access_grants`` records which role sees which org units' subtrees;
- every base table in ``marts`` with an ``org_unit_id`` column gets a policy that shows a
  role the rows whose org unit lies under one of its granted org units, with row-level
  security *forced* so that even a role that somehow owned a table could not read around it;
- views in ``marts`` run as the querying role (``security_invoker``), so they inherit the
  tables' policies instead of reading with their owner's rights;
- granted roles are created ``NOSUPERUSER NOBYPASSRLS``, own nothing, and get ``SELECT`` on
  ``marts`` only (raw, staging, intermediate and audit stay closed).

dbt rebuilds tables on every run, and a rebuilt table has neither policies nor grants, so
:func:`apply_access_policies` runs after every transform once any grant exists.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pipelines.errors import HealthpipeError
from pipelines.warehouse import Warehouse

ROLE_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
POLICY = "hp_org_unit_scope"
VISIBLE_FUNCTION = "audit.hp_visible_org_units"

ACCESS_DDL = (
    """create table if not exists audit.access_grants (
    role_name text not null,
    org_unit_id text not null,
    granted_at timestamptz not null default now(),
    granted_by text not null default current_user,
    primary key (role_name, org_unit_id)
)""",
    # Runs as its owner (the pipeline's user) so that it reads the whole hierarchy even though
    # dim_org_unit itself is filtered for the role asking.
    f"""create or replace function {VISIBLE_FUNCTION}(role_name text)
returns setof text
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select o.org_unit_id
    from marts.dim_org_unit as o
    join audit.access_grants as g
        on g.role_name = $1 and o.path || '/' like '%/' || g.org_unit_id || '/%'
$$""",
    f"revoke all on function {VISIBLE_FUNCTION}(text) from public",
)


class AccessError(HealthpipeError):
    """A grant that cannot be made (wrong warehouse, unknown org unit, bad role name)."""


@dataclass(frozen=True)
class Grant:
    role: str
    org_unit_id: str
    org_unit_name: str
    tables: int


def _require_postgres(warehouse: Warehouse) -> None:
    if warehouse.kind != "postgres":
        raise AccessError(
            "access by org unit needs the PostgreSQL warehouse (row-level security); a DuckDB "
            "file is readable in full by whoever can open it"
        )


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def grant_org_unit_access(
    warehouse: Warehouse, role: str, org_unit_id: str, *, password_env: str | None = None
) -> Grant:
    """Create (or extend) a read-only login role that sees ``org_unit_id``'s subtree."""
    _require_postgres(warehouse)
    if not ROLE_PATTERN.match(role):
        raise AccessError(
            f"role {role!r}: use lower-case letters, digits and underscores (at most 63), "
            "starting with a letter or underscore"
        )
    if not warehouse.table_exists("marts", "dim_org_unit"):
        raise AccessError("marts.dim_org_unit does not exist yet: run `healthpipe run` first")
    found = warehouse.fetchall(
        "select name from marts.dim_org_unit where org_unit_id = $id", {"id": org_unit_id}
    )
    if not found:
        raise AccessError(
            f"org unit {org_unit_id!r} is not in marts.dim_org_unit: give a DHIS2 org unit UID"
        )
    password = None
    if password_env:
        password = os.environ.get(password_env)
        if not password:
            raise AccessError(f"--password-env {password_env}: that environment variable is empty")
    with warehouse.transaction():
        for statement in ACCESS_DDL:
            warehouse.execute(statement)
        exists = warehouse.fetch_scalar(
            "select count(*) from pg_roles where rolname = $role", {"role": role}
        )
        attributes = "login nosuperuser nocreatedb nocreaterole nobypassrls noinherit"
        verb = "alter" if exists else "create"
        warehouse.execute(f"{verb} role {_quote(role)} with {attributes}")
        if password is not None:
            # utility statements take no bind parameters: the literal is escaped here
            warehouse.execute(f"alter role {_quote(role)} password {_literal(password)}")
        owns = warehouse.fetch_scalar(
            "select count(*) from pg_class c join pg_roles r on r.oid = c.relowner "
            "where r.rolname = $role",
            {"role": role},
        )
        if owns:
            raise AccessError(f"role {role!r} owns {owns} relations: a reader must own nothing")
        warehouse.execute(
            "insert into audit.access_grants (role_name, org_unit_id) values ($role, $org_unit) "
            "on conflict do nothing",
            {"role": role, "org_unit": org_unit_id},
        )
        tables = _apply(warehouse)
    return Grant(role=role, org_unit_id=org_unit_id, org_unit_name=str(found[0][0]), tables=tables)


def apply_access_policies(warehouse: Warehouse) -> int:
    """Re-apply policies and grants to every mart (after dbt rebuilt them). Returns the number
    of tables placed under row-level security; 0 on DuckDB or when nobody was granted."""
    if warehouse.kind != "postgres" or not warehouse.table_exists("audit", "access_grants"):
        return 0
    with warehouse.transaction():
        return _apply(warehouse)


def _apply(warehouse: Warehouse) -> int:
    roles = [
        row[0] for row in warehouse.fetchall("select distinct role_name from audit.access_grants")
    ]
    if not roles:
        return 0
    relations = warehouse.fetchall(
        "select c.relname, c.relkind, r.rolname, exists ("
        "  select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'org_unit_id' "
        "  and not a.attisdropped) "
        "from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "join pg_roles r on r.oid = c.relowner "
        "where n.nspname = 'marts' and c.relkind in ('r', 'p', 'v', 'm') order by c.relname"
    )
    secured = 0
    for name, kind, owner, has_org_unit in relations:
        table = f"marts.{_quote(name)}"
        if kind == "v":
            # a view reads with its owner's rights unless told otherwise (PostgreSQL 15+)
            warehouse.execute(f"alter view {table} set (security_invoker = true)")
        elif kind == "m" and has_org_unit:
            # a materialized view cannot carry policies: it stays closed to granted roles
            continue
        elif has_org_unit:
            warehouse.execute(f"alter table {table} enable row level security")
            warehouse.execute(f"alter table {table} force row level security")
            warehouse.execute(f"drop policy if exists {POLICY} on {table}")
            # The owner (the pipeline) keeps full access, for reads and for dbt's writes;
            # everyone else sees the subtrees granted to them.
            warehouse.execute(
                f"create policy {POLICY} on {table} for all "
                f"using (current_user = {_literal(owner)} or org_unit_id in "
                f"(select {VISIBLE_FUNCTION}(current_user))) "
                f"with check (current_user = {_literal(owner)})"
            )
            secured += 1
    for role in roles:
        quoted = _quote(role)
        warehouse.execute(f"grant usage on schema marts to {quoted}")
        warehouse.execute(f"grant select on all tables in schema marts to {quoted}")
        # the policies call the visibility function as the querying role
        warehouse.execute(f"grant usage on schema audit to {quoted}")
        warehouse.execute(f"grant execute on function {VISIBLE_FUNCTION}(text) to {quoted}")
    return secured


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
