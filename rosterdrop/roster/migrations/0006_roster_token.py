"""The roster token moves from districts_district.roster_token into the roster app's own
table, one row per district, each keeping its value (the saved snapshots are named by it)."""

import django.db.models.deletion
from django.db import migrations, models

import rosterdrop.roster.models


def carry_over(apps, schema_editor):
    District = apps.get_model("districts", "District")
    RosterToken = apps.get_model("roster", "RosterToken")
    RosterToken.objects.bulk_create(
        RosterToken(district_id=pk, token=token)
        for pk, token in District.objects.values_list("pk", "roster_token").iterator()
    )


def carry_back(apps, schema_editor):
    District = apps.get_model("districts", "District")
    RosterToken = apps.get_model("roster", "RosterToken")
    for district_id, token in RosterToken.objects.values_list("district_id", "token").iterator():
        District.objects.filter(pk=district_id).update(roster_token=token)


class Migration(migrations.Migration):

    dependencies = [
        ("districts", "0007_cadence_pauses"),
        ("roster", "0005_roster_tables_per_entity"),
    ]

    operations = [
        migrations.CreateModel(
            name="RosterToken",
            fields=[
                (
                    "district",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="districts.district",
                    ),
                ),
                (
                    "token",
                    models.BigIntegerField(default=rosterdrop.roster.models.new_roster_token),
                ),
            ],
        ),
        migrations.RunPython(carry_over, carry_back),
    ]
