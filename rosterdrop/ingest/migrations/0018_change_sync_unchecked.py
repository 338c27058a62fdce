"""A change row's sync without a database constraint or an index of its own (ingest.models.Change):
no check of each row at the commit of the sync that writes them."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("ingest", "0017_change_records_index"),
    ]

    operations = [
        migrations.AlterField(
            model_name="change",
            name="sync",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="record_changes",
                to="ingest.sync",
            ),
        ),
    ]
