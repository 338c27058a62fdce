"""Change rows name the roster rows they changed (record_id, and left_record_id: the row left
under a renamed record's old ID), so that what a sync changed is an index range
(ingest.models.changed_by). The change rows of applied syncs get them here, found by their
source IDs: a record a sync changed is now under the ID its change row names, unless a later
sync changed it again, and then that sync's change row names it (changed_by only counts a
record for the sync that changed it last). A held or discarded sync's preview rows name
none: it changed nothing. Their index comes after (0017): PostgreSQL builds no index on
a table whose rows this transaction updated while their foreign key checks wait for its
end."""

from django.db import migrations, models
from django.db.models import OuterRef, Subquery

MODEL_NAMES = {
    "orgs": "Org",
    "academicSessions": "AcademicSession",
    "courses": "Course",
    "classes": "Class",
    "users": "User",
    "roles": "Role",
    "demographics": "Demographics",
    "agents": "Agent",
    "enrollments": "Enrollment",
}
APPLIED = ("applied", "applied_with_errors")


def name_records(apps, schema_editor):
    Change = apps.get_model("ingest", "Change")
    Sync = apps.get_model("ingest", "Sync")
    applied = Change.objects.filter(sync__status__in=APPLIED)
    for district in Sync.objects.values_list("district_id", flat=True).distinct():
        for entity, name in MODEL_NAMES.items():
            table = apps.get_model("roster", name).objects.filter(district_id=district)
            rows = applied.filter(sync__district_id=district, entity=entity)
            rows.update(
                record_id=Subquery(table.filter(sourced_id=OuterRef("sourced_id")).values("id"))
            )
            # Renames are few: their old IDs read, then each row found by the unique index.
            renames = rows.filter(action="updated", fields__0__field="sourcedId")
            for pk, old in renames.values_list("pk", "fields__0__before"):
                left = table.filter(sourced_id=old).values_list("id", flat=True).first()
                Change.objects.filter(pk=pk).update(left_record_id=left)


class Migration(migrations.Migration):
    dependencies = [
        ("ingest", "0015_rostergaps_token"),
        ("roster", "0011_lookups_without_status"),
    ]

    operations = [
        migrations.AddField(
            model_name="change",
            name="record_id",
            field=models.BigIntegerField(null=True),
        ),
        migrations.AddField(
            model_name="change",
            name="left_record_id",
            field=models.BigIntegerField(null=True),
        ),
        migrations.RunPython(name_records, migrations.RunPython.noop),
    ]
