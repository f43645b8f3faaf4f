"""Schema privileges that make the application role a pure data user of a ReadRoom database.

Run as the database owner (the role migrations run as) on the database to prepare:
`scripts/stack.py up` calls it on `readroom`, the test suite on its own test database.
The owner keeps CREATE on `public` and owns every table; the application role
(no BYPASSRLS, owns nothing) gets only USAGE on the schema and, through default
privileges, DML on the tables and sequences the owner creates later — so row-level
security policies, which a table owner bypasses, always apply to it.

Imports only psycopg, never Django: it runs before Django is configured.
"""

from psycopg import sql

__all__ = ["prepare_database"]


def prepare_database(owner_conn, app_role="readroom_app"):
    """Grant `app_role` data access on the owner's current database; idempotent.

    `owner_conn` is a psycopg connection logged in as the database owner (on PostgreSQL 15
    the `public` schema belongs to `pg_database_owner`, so the owner may change its
    privileges). In autocommit mode the statements commit together; inside a transaction
    the caller already opened, they run in a savepoint and the caller commits.
    """
    with owner_conn.transaction():
        with owner_conn.cursor() as cur:
            cur.execute("SELECT current_user, current_database()")
            owner, database = cur.fetchone()
            names = {
                "app": sql.Identifier(app_role),
                "owner": sql.Identifier(owner),
                "db": sql.Identifier(database),
            }
            for statement in _STATEMENTS:
                cur.execute(sql.SQL(statement).format(**names))


# Only future objects get default privileges: re-granting on existing tables here would
# undo deliberate per-table revokes (an append-only audit log, for example) on every `up`.
_STATEMENTS = (
    # Nobody but the owner creates objects in public; PUBLIC loses the PG<15-style access.
    "REVOKE ALL ON SCHEMA public FROM PUBLIC",
    "GRANT USAGE ON SCHEMA public TO {app}",
    "GRANT CREATE, USAGE ON SCHEMA public TO CURRENT_USER",
    "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
    "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app}",
    "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {app}",
    "GRANT CONNECT ON DATABASE {db} TO {app}",
)
