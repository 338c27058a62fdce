from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("roster", "0010_rewrite_with_room")]

    operations = [
        migrations.AddIndex(
            model_name="academicsession",
            index=models.Index(
                fields=["district", "first_seen_sync_id", "id"], name="academicsession_first_seen"
            ),
        ),
        migrations.AddIndex(
            model_name="agent",
            index=models.Index(
                fields=["district", "first_seen_sync_id", "id"], name="agent_first_seen"
            ),
        ),
        migrations.AddIndex(
            model_name="class",
            index=models.Index(
                fields=["district", "first_seen_sync_id", "id"], name="class_first_seen"
            ),
        ),
        migrations.AddIndex(
            model_name="course",
            index=models.Index(
                fields=["district", "first_seen_sync_id", "id"], name="course_first_seen"
            ),
        ),
        migrations.AddIndex(
            model_name="demographics",
            index=models.Index(
                fields=["district", "first_seen_sync_id", "id"], name="demographics_first_seen"
            ),
        ),
        migrations.AddIndex(
            model_name="enrollment",
            index=models.Index(
                fields=["district", "first_seen_sync_id", "id"], name="enrollment_first_seen"
            ),
        ),
        migrations.AddIndex(
            model_name="enrollment",
            index=models.Index(
                fields=["district", "userSourcedId"], name="enrollment_userSourcedId"
            ),
        ),
        migrations.AddIndex(
            model_name="enrollment",
            index=models.Index(
                fields=["district", "classSourcedId", "role"], name="enrollment_classSourcedId"
            ),
        ),
        migrations.AddIndex(
            model_name="org",
            index=models.Index(
                fields=["district", "first_seen_sync_id", "id"], name="org_first_seen"
            ),
        ),
        migrations.AddIndex(
            model_name="role",
            index=models.Index(
                fields=["district", "first_seen_sync_id", "id"], name="role_first_seen"
            ),
        ),
        migrations.AddIndex(
            model_name="role",
            index=models.Index(
                fields=["district", "userSourcedId", "role"], name="role_userSourcedId"
            ),
        ),
        migrations.AddIndex(
            model_name="user",
            index=models.Index(
                fields=["district", "first_seen_sync_id", "id"], name="user_first_seen"
            ),
        ),
    ]
