"""The roster token now lives in the roster app's table (roster 0006 carried every value over)."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("districts", "0007_cadence_pauses"),
        ("roster", "0006_roster_token"),
    ]

    operations = [
        migrations.RemoveField(
            model_name="district",
            name="roster_token",
        ),
    ]
