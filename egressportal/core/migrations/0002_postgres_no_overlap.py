"""PostgreSQL exclusion constraints: pools never overlap, app source CIDRs never
overlap. They are the last guard behind the services' checks, so that two
concurrent requests can never both win. SQLite serialises writers, so the
service-level check inside a transaction suffices there."""

from django.db import migrations

FORWARD = [
    "CREATE EXTENSION IF NOT EXISTS btree_gist",
    "ALTER TABLE core_ippool ADD CONSTRAINT ippool_no_overlap "
    "EXCLUDE USING gist (int8range(first_int, last_int, '[]') WITH &&)",
    "ALTER TABLE core_appsourcecidr ADD CONSTRAINT appsourcecidr_no_overlap "
    "EXCLUDE USING gist (int8range(first_int, last_int, '[]') WITH &&)",
]
BACKWARD = [
    "ALTER TABLE core_appsourcecidr DROP CONSTRAINT IF EXISTS appsourcecidr_no_overlap",
    "ALTER TABLE core_ippool DROP CONSTRAINT IF EXISTS ippool_no_overlap",
]


def _run(statements):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for sql in statements:
            schema_editor.execute(sql)

    return apply


class Migration(migrations.Migration):
    dependencies = [("core", "0001_initial")]
    operations = [migrations.RunPython(_run(FORWARD), _run(BACKWARD))]
