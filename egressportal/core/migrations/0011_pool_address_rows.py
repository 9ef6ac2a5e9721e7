"""Free address rows made ahead of use, so the allocator claims a row (FOR UPDATE SKIP LOCKED) instead of
locking the whole pool: an index for the claim, and the first chunk of rows for the pools that exist."""

from django.db import migrations, models

from egressportal.core import ipam

# As services.network.POOL_ROWS_CHUNK when this migration was written (the allocator makes the rest).
CHUNK = 4096


def _make_rows(apps, schema_editor):
    IPPool, EgressIP = apps.get_model("core", "IPPool"), apps.get_model("core", "EgressIP")
    for pool in IPPool.objects.filter(family=4):  # IPv4 only: IPv6 addresses ride on IPv4 rows, taken lazily
        net = ipam.parse_network(pool.cidr)
        used = set(EgressIP.objects.filter(pool=pool).values_list("address_int", flat=True))
        excluded = [ipam.parse_address(a) for a in pool.excluded]
        fresh = []
        for addr in ipam.iter_available(net, used, excluded):
            fresh.append(EgressIP(pool=pool, address=str(addr), address_int=int(addr), status="free"))
            if len(fresh) >= CHUNK:
                break
        EgressIP.objects.bulk_create(fresh, batch_size=1000, ignore_conflicts=True)


def _drop_unused_rows(apps, schema_editor):
    # Back to "a row for every address ever handed out": the free rows nobody ever held go.
    EgressIP = apps.get_model("core", "EgressIP")
    EgressIP.objects.filter(status="free", last_app__isnull=True, last_owner__isnull=True, assigned_at__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("core", "0010_ipv6_pools_addresses_placements")]

    operations = [
        migrations.AddIndex(
            model_name="egressip",
            index=models.Index(
                condition=models.Q(("status", "free")), fields=["pool", "address_int"], name="egressip_free_by_pool"
            ),
        ),
        migrations.RunPython(_make_rows, _drop_unused_rows),
    ]
