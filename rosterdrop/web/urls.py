from django.urls import path

from rosterdrop.web import assistant, audit, data, syncs, views, wizard

app_name = "web"

urlpatterns = [
    path("", views.home, name="home"),
    path("audit/", audit.audit_log, name="audit"),
    path("d/<slug:slug>/", views.district, name="district"),
    path("d/<slug:slug>/upload/", views.upload, name="upload"),
    path("d/<slug:slug>/settings/", views.update_settings, name="settings"),
    path("d/<slug:slug>/allow-list/", views.update_allow_list, name="allow_list"),
    path("d/<slug:slug>/notifications/", views.subscribe, name="subscribe"),
    path("d/<slug:slug>/notifications/<int:pk>/remove/", views.unsubscribe, name="unsubscribe"),
    path("d/<slug:slug>/file-templates.zip", views.file_templates_zip, name="file_templates_zip"),
    path("d/<slug:slug>/file-templates/<str:name>", views.file_template, name="file_template"),
    path("d/<slug:slug>/uploads/", views.uploads, name="uploads"),
    path("d/<slug:slug>/uploads/<int:pk>/raw", views.upload_raw, name="upload_raw"),
    path("d/<slug:slug>/syncs/", syncs.sync_list, name="syncs"),
    path("d/<slug:slug>/syncs/<int:pk>/", syncs.sync_detail, name="sync"),
    path("d/<slug:slug>/syncs/<int:pk>/issues.csv", syncs.issues_csv, name="issues_csv"),
    path(
        "d/<slug:slug>/syncs/<int:pk>/approve/",
        syncs.decide,
        {"decision": "approve"},
        name="approve",
    ),
    path(
        "d/<slug:slug>/syncs/<int:pk>/discard/",
        syncs.decide,
        {"decision": "discard"},
        name="discard",
    ),
    path("d/<slug:slug>/syncs/<int:pk>/retry/", syncs.retry, name="retry"),
    path("d/<slug:slug>/sis/", data.sis_data, name="sis"),
    path("d/<slug:slug>/roster/", data.roster, name="roster"),
    path("d/<slug:slug>/roster/<str:entity>/<path:sourced_id>", data.record_detail, name="record"),
    path("d/<slug:slug>/assistant/", assistant.assistant, name="assistant"),
    path("d/<slug:slug>/assistant/why/", assistant.why, name="why"),
    path("d/<slug:slug>/templates/", wizard.templates, name="wizard"),
    path("d/<slug:slug>/templates/new/", wizard.kind, name="template_kind"),
    path("d/<slug:slug>/templates/new/sample/", wizard.sample, name="template_sample"),
    path("d/<slug:slug>/templates/new/columns/", wizard.columns, name="template_columns"),
    path("d/<slug:slug>/templates/new/check/", wizard.check, name="template_check"),
    path("d/<slug:slug>/templates/<int:pk>/delete/", wizard.delete, name="template_delete"),
    path("d/<slug:slug>/templates/export.json", wizard.export, name="template_export"),
]
