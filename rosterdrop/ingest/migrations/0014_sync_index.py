"""A sync's SIS search index state (ingest.index_builds): built by a background job after the
sync, no longer inside its import. Every sync before this had it built inline (if at all)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("ingest", "0013_sent_keys"),
    ]

    operations = [
        # Existing syncs: built (their import built it); new ones: wanted.
        migrations.AddField(
            model_name="sync",
            name="index",
            field=models.CharField(
                choices=[
                    ("wanted", "Wanted"),
                    ("building", "Building"),
                    ("again", "Building again"),
                    ("built", "Built"),
                ],
                default="built",
                max_length=10,
            ),
        ),
        migrations.AlterField(
            model_name="sync",
            name="index",
            field=models.CharField(
                choices=[
                    ("wanted", "Wanted"),
                    ("building", "Building"),
                    ("again", "Building again"),
                    ("built", "Built"),
                ],
                db_index=True,
                default="wanted",
                max_length=10,
            ),
        ),
    ]
