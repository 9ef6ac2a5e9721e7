"""Tenant-declared source CIDRs are gone (their data moved to placements in 0008), with their global
overlap constraint."""

from django.db import migrations


def _drop_constraint(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE core_appsourcecidr DROP CONSTRAINT IF EXISTS appsourcecidr_no_overlap")


class Migration(migrations.Migration):
    dependencies = [("core", "0008_source_cidrs_to_placements")]
    operations = [
        migrations.RunPython(_drop_constraint, migrations.RunPython.noop),
        migrations.DeleteModel(name="AppSourceCIDR"),
    ]
