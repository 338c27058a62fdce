"""PostgreSQL keeps a block's terms uncompressed (STORAGE EXTERNAL): a search reads them all,
and decompressing ~40 MB of TOAST per search at 500k students made it 2-3x slower."""

from django.db import migrations


def uncompressed(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "ALTER TABLE ingest_sentblock ALTER COLUMN terms SET STORAGE EXTERNAL"
        )


class Migration(migrations.Migration):

    dependencies = [
        ("ingest", "0009_sent_index"),
    ]

    operations = [migrations.RunPython(uncompressed, migrations.RunPython.noop)]
