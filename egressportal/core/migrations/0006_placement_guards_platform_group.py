"""The database's own guards on placements (PostgreSQL), and the platform group.

- Within a region an address belongs to at most one app: an exclusion constraint over the region,
  the address range and the app (two placements of the same app may overlap, e.g. while it moves).
- A placement lies inside one of its node's pod CIDRs, and app, node and placement share one region:
  a trigger on placements, and one on nodes so that a node's pod CIDRs cannot shrink from under its
  placements.
SQLite has neither; there the service (services/placements.py) checks the same inside its transaction,
and SQLite serialises writers.

The group ``platform`` holds the service accounts of the platform (egressportal/core/roles.py) with the
permissions they need: read and report placements, create and read apps, read nodes.
"""

from django.db import migrations

FORWARD = [
    "CREATE EXTENSION IF NOT EXISTS btree_gist",
    "ALTER TABLE core_placement ADD CONSTRAINT placement_one_app_per_address "
    "EXCLUDE USING gist (region_id WITH =, int8range(first_int, last_int, '[]') WITH &&, app_id WITH <>)",
    """
    CREATE OR REPLACE FUNCTION core_placement_check() RETURNS trigger AS $$
    DECLARE
      node_region bigint;
      app_region bigint;
      pods jsonb;
    BEGIN
      SELECT region_id, pod_cidrs INTO node_region, pods FROM core_node WHERE id = NEW.node_id;
      SELECT region_id INTO app_region FROM core_app WHERE id = NEW.app_id;
      IF node_region IS DISTINCT FROM NEW.region_id OR app_region IS DISTINCT FROM NEW.region_id THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
          MESSAGE = 'placement ' || NEW.cidr || ': app, node and placement must be in one region';
      END IF;
      IF NOT EXISTS (
        SELECT 1 FROM jsonb_array_elements_text(COALESCE(pods, '[]'::jsonb)) AS p(c)
        WHERE NEW.cidr::cidr <<= p.c::cidr
      ) THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
          MESSAGE = 'placement ' || NEW.cidr || ' is not inside a pod CIDR of its node';
      END IF;
      RETURN NEW;
    END
    $$ LANGUAGE plpgsql
    """,
    "CREATE TRIGGER core_placement_check BEFORE INSERT OR UPDATE ON core_placement "
    "FOR EACH ROW EXECUTE FUNCTION core_placement_check()",
    """
    CREATE OR REPLACE FUNCTION core_node_placements_check() RETURNS trigger AS $$
    BEGIN
      IF EXISTS (
        SELECT 1 FROM core_placement pl
        WHERE pl.node_id = NEW.id AND (
          pl.region_id <> NEW.region_id OR NOT EXISTS (
            SELECT 1 FROM jsonb_array_elements_text(COALESCE(NEW.pod_cidrs, '[]'::jsonb)) AS p(c)
            WHERE pl.cidr::cidr <<= p.c::cidr
          )
        )
      ) THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
          MESSAGE = 'node ' || NEW.name || ': placements would lie outside its pod CIDRs or region';
      END IF;
      RETURN NEW;
    END
    $$ LANGUAGE plpgsql
    """,
    "CREATE TRIGGER core_node_placements_check BEFORE UPDATE OF pod_cidrs, region_id ON core_node "
    "FOR EACH ROW EXECUTE FUNCTION core_node_placements_check()",
    """
    CREATE OR REPLACE FUNCTION core_app_placements_check() RETURNS trigger AS $$
    BEGIN
      IF EXISTS (SELECT 1 FROM core_placement pl WHERE pl.app_id = NEW.id AND pl.region_id <> NEW.region_id) THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = 'app ' || NEW.id || ': placed in another region';
      END IF;
      RETURN NEW;
    END
    $$ LANGUAGE plpgsql
    """,
    "CREATE TRIGGER core_app_placements_check BEFORE UPDATE OF region_id ON core_app "
    "FOR EACH ROW EXECUTE FUNCTION core_app_placements_check()",
]
BACKWARD = [
    "DROP TRIGGER IF EXISTS core_app_placements_check ON core_app",
    "DROP FUNCTION IF EXISTS core_app_placements_check()",
    "DROP TRIGGER IF EXISTS core_node_placements_check ON core_node",
    "DROP FUNCTION IF EXISTS core_node_placements_check()",
    "DROP TRIGGER IF EXISTS core_placement_check ON core_placement",
    "DROP FUNCTION IF EXISTS core_placement_check()",
    "ALTER TABLE core_placement DROP CONSTRAINT IF EXISTS placement_one_app_per_address",
]

PLATFORM_PERMISSIONS = [
    ("placement", "view_placement"),
    ("placement", "add_placement"),
    ("placement", "change_placement"),
    ("placement", "delete_placement"),
    ("app", "add_app"),
    ("app", "view_app"),
    ("node", "view_node"),
]


def _postgres(statements):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for sql in statements:
            schema_editor.execute(sql)

    return apply


def platform_group(apps, schema_editor):
    # Permissions are normally created after migrations (post_migrate); the group needs them now.
    from django.contrib.auth.management import create_permissions

    core = apps.get_app_config("core")
    core.models_module = True
    create_permissions(core, apps=apps, verbosity=0)
    core.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="platform")
    perms = Permission.objects.filter(
        content_type__app_label="core", codename__in=[codename for _, codename in PLATFORM_PERMISSIONS]
    )
    group.permissions.add(*perms)


def platform_group_remove(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name="platform").delete()


class Migration(migrations.Migration):
    dependencies = [("core", "0005_placements_and_quotas"), ("auth", "0012_alter_user_first_name_max_length")]
    operations = [
        migrations.RunPython(_postgres(FORWARD), _postgres(BACKWARD)),
        migrations.RunPython(platform_group, platform_group_remove),
    ]
