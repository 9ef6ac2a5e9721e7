"""IPv6 beside IPv4: IPv6 pools, the IPv6 partner of an egress address, IPv6 placements and transit
addresses.

IPv6 ranges are stored as sortable hex keys (a 128-bit number fits no portable integer column), so an
IPv6 pool or placement has no integer bounds. PostgreSQL's exclusion constraints on pools and placements
move from ``int8range(first_int, last_int)`` (IPv4 only; a NULL bound would make it unbounded) to the
CIDR as ``inet`` with ``&&``, which covers both families (an IPv4 and an IPv6 network never overlap).
"""

import django.db.models.deletion
import django.db.models.functions.text
import django.db.models.lookups
import egressportal.core.validators
from django.conf import settings
from django.db import migrations, models

FORWARD = [
    "ALTER TABLE core_ippool DROP CONSTRAINT IF EXISTS ippool_no_overlap",
    "ALTER TABLE core_ippool ADD CONSTRAINT ippool_no_overlap EXCLUDE USING gist ((cidr::inet) inet_ops WITH &&)",
    "ALTER TABLE core_placement DROP CONSTRAINT IF EXISTS placement_one_app_per_address",
    "ALTER TABLE core_placement ADD CONSTRAINT placement_one_app_per_address "
    "EXCLUDE USING gist (region_id WITH =, (cidr::inet) inet_ops WITH &&, app_id WITH <>)",
]
BACKWARD = [
    "ALTER TABLE core_placement DROP CONSTRAINT IF EXISTS placement_one_app_per_address",
    "ALTER TABLE core_placement ADD CONSTRAINT placement_one_app_per_address "
    "EXCLUDE USING gist (region_id WITH =, int8range(first_int, last_int, '[]') WITH &&, app_id WITH <>)",
    "ALTER TABLE core_ippool DROP CONSTRAINT IF EXISTS ippool_no_overlap",
    "ALTER TABLE core_ippool ADD CONSTRAINT ippool_no_overlap "
    "EXCLUDE USING gist (int8range(first_int, last_int, '[]') WITH &&)",
]


def _postgres(statements):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for sql in statements:
            schema_editor.execute(sql)

    return apply


class Migration(migrations.Migration):

    dependencies = [
        ('core', '0009_remove_appsourcecidr'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='ippool',
            options={'ordering': ['region__slug', 'family', 'first_int', 'first_hex'], 'verbose_name': 'IP pool'},
        ),
        migrations.AlterModelOptions(
            name='placement',
            options={'ordering': ['node_id', 'first_int', 'first_hex']},
        ),
        migrations.AddField(
            model_name='egressip',
            name='address6',
            field=models.GenericIPAddressField(blank=True, editable=False, null=True, protocol='IPv6', unique=True, validators=[egressportal.core.validators.validate_ipv6_address]),
        ),
        migrations.AddField(
            model_name='egressip',
            name='address6_hex',
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.AddField(
            model_name='egressip',
            name='pool6',
            field=models.ForeignKey(blank=True, editable=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='addresses6', to='core.ippool'),
        ),
        migrations.AddField(
            model_name='gateway',
            name='transit_address6',
            field=models.GenericIPAddressField(blank=True, help_text="The host's IPv6 address on the transit network; empty: the host carries no IPv6 egress.", null=True, protocol='IPv6', validators=[egressportal.core.validators.validate_ipv6_address], verbose_name='IPv6 transit address'),
        ),
        migrations.AddField(
            model_name='ippool',
            name='family',
            field=models.PositiveSmallIntegerField(choices=[(4, 'IPv4'), (6, 'IPv6')], default=4, editable=False),
        ),
        migrations.AddField(
            model_name='ippool',
            name='first_hex',
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.AddField(
            model_name='ippool',
            name='last_hex',
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.AddField(
            model_name='node',
            name='transit_address6',
            field=models.GenericIPAddressField(blank=True, help_text="The host's IPv6 address on the transit network; empty: the host carries no IPv6 egress.", null=True, protocol='IPv6', validators=[egressportal.core.validators.validate_ipv6_address], verbose_name='IPv6 transit address'),
        ),
        migrations.AddField(
            model_name='placement',
            name='first_hex',
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.AddField(
            model_name='placement',
            name='last_hex',
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.AlterField(
            model_name='ippool',
            name='cidr',
            field=models.CharField(max_length=43, unique=True, validators=[egressportal.core.validators.validate_cidr]),
        ),
        migrations.AlterField(
            model_name='ippool',
            name='first_int',
            field=models.BigIntegerField(editable=False, null=True),
        ),
        migrations.AlterField(
            model_name='ippool',
            name='last_int',
            field=models.BigIntegerField(editable=False, null=True),
        ),
        migrations.AlterField(
            model_name='node',
            name='pod_cidrs',
            field=models.JSONField(blank=True, default=list, help_text="The node's pod subnets, IPv4 and IPv6."),
        ),
        migrations.AlterField(
            model_name='placement',
            name='cidr',
            field=models.CharField(max_length=43, validators=[egressportal.core.validators.validate_cidr]),
        ),
        migrations.AlterField(
            model_name='placement',
            name='first_int',
            field=models.BigIntegerField(editable=False, null=True),
        ),
        migrations.AlterField(
            model_name='placement',
            name='last_int',
            field=models.BigIntegerField(editable=False, null=True),
        ),
        migrations.AddIndex(
            model_name='egressip',
            index=models.Index(fields=['pool6', 'address6_hex'], name='core_egress_pool6_i_9aaacf_idx'),
        ),
        migrations.AddIndex(
            model_name='placement',
            index=models.Index(fields=['region', 'first_hex'], name='core_placem_region__38f09e_idx'),
        ),
        migrations.AddConstraint(
            model_name='egressip',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('address6__isnull', True), ('address6_hex__isnull', True), ('pool6__isnull', True)), models.Q(('address6__isnull', False), ('address6_hex__isnull', False), ('pool6__isnull', False)), _connector='OR'), name='egressip_address6_complete'),
        ),
        migrations.AddConstraint(
            model_name='ippool',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('family', 4), ('first_hex__isnull', True), ('first_int__isnull', False), ('last_hex__isnull', True), ('last_int__isnull', False)), models.Q(('family', 6), ('first_hex__isnull', False), ('first_hex__lte', models.F('last_hex')), ('first_int__isnull', True), ('last_hex__isnull', False), ('last_int__isnull', True)), _connector='OR'), name='ippool_bounds_match_family'),
        ),
        migrations.AddConstraint(
            model_name='placement',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('first_hex__isnull', True), ('first_int__isnull', False), ('last_hex__isnull', True), ('last_int__isnull', False)), models.Q(('first_hex__isnull', False), ('first_int__isnull', True), ('last_hex__isnull', False), ('last_int__isnull', True)), _connector='OR'), name='placement_bounds_one_family'),
        ),
        migrations.AddConstraint(
            model_name='placement',
            constraint=models.CheckConstraint(condition=models.Q(('first_hex__isnull', True), models.Q(django.db.models.lookups.Exact(django.db.models.functions.text.Substr('first_hex', 1, 30), django.db.models.functions.text.Substr('last_hex', 1, 30)), ('first_hex__lte', models.F('last_hex'))), _connector='OR'), name='placement6_at_most_slash120'),
        ),
        migrations.RunPython(_postgres(FORWARD), _postgres(BACKWARD)),
    ]
