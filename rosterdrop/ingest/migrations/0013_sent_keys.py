"""The own IDs of an indexed file that names no one, in byte order (ingest.sent_index): a
search finds one whole or from its start by the index on each record's first value. Kept
uncompressed on PostgreSQL (STORAGE EXTERNAL), as the other terms are: compressing 185 MB at
5M enrollments costs the build, and a search reads one or two records."""

import django.db.models.deletion
from django.db import migrations, models


def uncompressed(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE ingest_sentkeys ALTER COLUMN terms SET STORAGE EXTERNAL")


class Migration(migrations.Migration):

    dependencies = [
        ("ingest", "0012_sent_values"),
    ]

    operations = [
        migrations.AddField(
            model_name="sentfile",
            name="row_terms",
            field=models.BooleanField(default=True, help_text="Its blocks keep each row's searched cells."),
        ),
        migrations.CreateModel(
            name="SentKeys",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("first", models.BinaryField(help_text="Its first value, UTF-8 (at most its first 64 bytes)")),
                ("terms", models.TextField(help_text="A line per value, casefolded, in byte order")),
                ("rows", models.BinaryField(help_text="int32 row of each value")),
                ("file", models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="keys", to="ingest.sentfile")),
            ],
            options={
                "indexes": [models.Index(fields=["file", "first"], name="sent_keys_first")],
            },
        ),
        migrations.RunPython(uncompressed, migrations.RunPython.noop),
    ]
