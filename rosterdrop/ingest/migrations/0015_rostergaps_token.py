"""The roster token the kept gaps describe (ingest.gaps), and every ID of the small ones: a
sync counts the gaps from what it changed only on the roster they were counted on. Gaps kept
before have neither: counted in full by the next sync."""

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
        migrations.AddField(
            model_name="rostergaps",
            name="known",
            field=models.JSONField(default=dict, help_text="{gap: [sourced ID, ...]}"),
        ),
    ]
