"""A rename applied before this version moved the record to its new sourcedId and left nothing
under the old one; now it leaves the old ID as a removal does (roster.store.rename_records),
which is how the REST service and the delta export learn that an ID went. This leaves that
row for the renames of earlier syncs, found in ingest's change rows (an update whose first
field is sourcedId), with the values the record has now; and gives each district it changes a
new roster token, so that its roster snapshot is rebuilt from the database."""

import secrets

from django.db import migrations

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


def left_tobedeleted(apps, schema_editor):
    Change = apps.get_model("ingest", "Change")
    RosterToken = apps.get_model("roster", "RosterToken")
    moves = (
        Change.objects.filter(action="updated", fields__0__field="sourcedId")
        .order_by("id")
        .values_list("sync__district_id", "entity", "fields__0__before", "sourced_id", "sync_id")
    )
    moved: dict[tuple[int, str], dict[str, tuple[str, int]]] = {}
    for district, entity, old, new, sync in moves:
        moved.setdefault((district, entity), {})[old] = (new, sync)
    changed = set()
    for (district, entity), renames in moved.items():
        model = apps.get_model("roster", MODEL_NAMES[entity])
        table = model.objects.filter(district_id=district)
        present = set(
            table.filter(sourced_id__in=list(renames)).values_list("sourced_id", flat=True)
        )
        left = []
        for old, (new, sync) in renames.items():
            if old in present:  # the ID came back (or was left so already)
                continue
            seen = {old}
            while new in renames and new not in present and new not in seen:  # renamed again
                seen.add(new)
                new = renames[new][0]
            record = table.filter(sourced_id=new).first()
            if record is None:
                continue
            record.pk, record.sourced_id = None, old
            record.status, record.changed_sync_id = "tobedeleted", sync
            left.append(record)
        model.objects.bulk_create(left)
        if left:
            changed.add(district)
    for district in changed:
        RosterToken.objects.filter(district_id=district).update(token=secrets.randbits(62) + 1)


class Migration(migrations.Migration):
    dependencies = [
        ("ingest", "0010_sent_block_terms_uncompressed"),
        ("roster", "0008_reading_indexes"),
    ]

    operations = [migrations.RunPython(left_tobedeleted, migrations.RunPython.noop)]
