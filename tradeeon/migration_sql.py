"""SQL that migrations run on PostgreSQL only (triggers, sequences); on
SQLite, the embedded default, the application does the same work itself."""


def on_postgresql(sql: str):
    """A RunPython function that executes `sql` when the database is PostgreSQL."""

    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run
