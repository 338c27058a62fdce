from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("inbox", "0002_upload_purged_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="upload",
            name="folder_name",
            field=models.CharField(
                blank=True,
                default="",
                help_text="The name it shows under in the district's SFTP/FTPS folder when "
                "uploads are kept in shared storage; empty once deleted there, renamed over or "
                "replaced.",
                max_length=255,
            ),
            preserve_default=False,
        ),
    ]
