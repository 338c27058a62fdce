"""The roster token the kept gaps describe (ingest.gaps): a sync counts the gaps from what it
changed only on the roster they were counted on. Gaps kept before have none: counted in full
by the next sync."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("ingest", "0014_sync_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="rostergaps",
            name="token",
            field=models.BigIntegerField(null=True),
        ),
    ]
