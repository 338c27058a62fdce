import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [("districts", "0001_initial")]

    operations = [
        migrations.CreateModel(
            name="ImportTemplate",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("file_name", models.CharField(help_text="Exact, case-sensitive, with extension.", max_length=255)),
                ("kind", models.CharField(help_text="What the file holds: students, teachers...", max_length=20)),
                ("columns", models.JSONField(default=dict)),
                ("delimiter", models.CharField(default=",", max_length=1)),
                ("encoding", models.CharField(blank=True, help_text="Blank: the district's.", max_length=40)),
                ("date_format", models.CharField(default="%Y-%m-%d", max_length=20)),
                ("mode", models.CharField(choices=[("snapshot", "Full snapshot (records missing from the file are removed)"), ("add_only", "Add and update only (nothing is removed)")], default="snapshot", max_length=10)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                ("district", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="templates", to="districts.district")),
            ],
            options={
                "ordering": ["district", "file_name"],
                "constraints": [models.UniqueConstraint(fields=("district", "file_name"), name="template_file_unique")],
            },
        ),
    ]
