"""The index of what each sync changed (ingest.models.changed_by): its change rows' record IDs,
by sync and entity, and the few rows left under renamed records' old IDs."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("ingest", "0016_change_record_ids"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="change",
            index=models.Index(fields=["sync", "entity", "record_id"], name="change_records"),
        ),
        migrations.AddIndex(
            model_name="change",
            index=models.Index(
                condition=models.Q(("left_record_id__isnull", False)),
                fields=["sync", "entity", "left_record_id"],
                name="change_left_records",
            ),
        ),
    ]
