"""The distinct values of an indexed file's reference columns with their rows
(ingest.sent_index): kept uncompressed on PostgreSQL (STORAGE EXTERNAL), as a block's terms
are (0010), since a search reads them all."""

import django.db.models.deletion
from django.db import migrations, models


def uncompressed(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE ingest_sentvalues ALTER COLUMN terms SET STORAGE EXTERNAL"
        )


class Migration(migrations.Migration):

    dependencies = [
        ("ingest", "0011_renamed_ids_left_tobedeleted"),
    ]

    operations = [
        migrations.CreateModel(
            name="SentValues",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("first", models.PositiveIntegerField(help_text="Its first value's number.")),
                ("terms", models.TextField(help_text="A line per value, casefolded")),
                ("rows", models.BinaryField(help_text="int32 rows each value is in, ascending, value by value")),
                ("ends", models.BinaryField(help_text="int32 end of each value's rows in `rows`")),
                ("file", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="values", to="ingest.sentfile")),
            ],
        ),
        migrations.AddConstraint(
            model_name="sentvalues",
            constraint=models.UniqueConstraint(fields=("file", "first"), name="sent_values_unique"),
        ),
        migrations.RunPython(uncompressed, migrations.RunPython.noop),
    ]
