"""Row-level security, the second wall: SQL that migrations apply to every tenant table.

Each policy mirrors `tenants.scoping.scope_filter` for the same model, on the transaction-local
settings written by `tenants.context`. FORCE makes the table owner obey it too.
"""

from __future__ import annotations

from django.db import migrations

CONTEXT_FUNCTIONS_SQL = """
CREATE OR REPLACE FUNCTION readroom_tenant_ids() RETURNS bigint[]
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(nullif(current_setting('readroom.tenant_ids', true), ''), '{}')::bigint[] $$;
CREATE OR REPLACE FUNCTION readroom_user_id() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('readroom.user_id', true), '')::bigint $$;
CREATE OR REPLACE FUNCTION readroom_token_hash() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('readroom.token_hash', true), '') $$;
CREATE OR REPLACE FUNCTION readroom_platform_scope() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(current_setting('readroom.platform_scope', true), '') = 'on' $$;
"""

_CONTEXT_SQL = {
    "user_id": "readroom_user_id()",
    "token_hash": "readroom_token_hash()",
}


def policy_condition(extra: tuple[tuple[str, str], ...] = (), *, platform_rows: bool = False) -> str:
    conditions = ["tenant_id = ANY (readroom_tenant_ids())"]
    for column, context_attribute in extra:
        conditions.append(f"{column} = {_CONTEXT_SQL[context_attribute]}")
    if platform_rows:
        conditions.append("(tenant_id IS NULL AND readroom_platform_scope())")
    return " OR ".join(f"({condition})" for condition in conditions)


def enable_rls(
    table: str, *, extra: tuple[tuple[str, str], ...] = (), platform_rows: bool = False
) -> migrations.RunSQL:
    visible = policy_condition(extra, platform_rows=platform_rows)
    # Writes need the tenant itself in context: seeing your own row never lets you create one elsewhere.
    writable = policy_condition((), platform_rows=platform_rows)
    return migrations.RunSQL(
        sql=[
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
            f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
            f"DROP POLICY IF EXISTS tenant_isolation ON {table}",
            f"CREATE POLICY tenant_isolation ON {table} USING ({visible}) WITH CHECK ({writable})",
        ],
        reverse_sql=[
            f"DROP POLICY IF EXISTS tenant_isolation ON {table}",
            f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY",
            f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
        ],
    )


def context_functions() -> migrations.RunSQL:
    return migrations.RunSQL(sql=CONTEXT_FUNCTIONS_SQL, reverse_sql=migrations.RunSQL.noop)
