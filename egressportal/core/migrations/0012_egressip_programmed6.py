"""EgressIP.programmed6: whether the gateway holds the IPv6 partner of an address that is live already
(False only while an IPv6 backfill waits for the gateway). Every existing partner was applied with its row."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("core", "0011_pool_address_rows")]

    operations = [
        migrations.AddField(
            model_name="egressip",
            name="programmed6",
            field=models.BooleanField(default=True, editable=False),
        ),
    ]
