"""Console pages: dashboard, district overview with its settings and upload form, uploads."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from rosterdrop.accounts.access import districts_for, is_operator
from rosterdrop.accounts.decorators import audit_admin, client_ip, district_view, require_operator
from rosterdrop.formats import get_format
from rosterdrop.formats.download import file_templates, templates_zip
from rosterdrop.inbox.downloads import NotKept, raw_download
from rosterdrop.inbox.models import Upload
from rosterdrop.inbox.store import QuotaExceeded
from rosterdrop.ingest.jobs import start_import
from rosterdrop.ingest.models import Sync
from rosterdrop.ingest.syncs import claimed
from rosterdrop.notify.models import Subscription
from rosterdrop.web.check_only import check_only
from rosterdrop.web.connection import connection_for
from rosterdrop.web.downloads import attachment
from rosterdrop.web.forms import DistrictSettingsForm, PauseForm, SubscriptionForm, UploadForm
from rosterdrop.web.imports import receive_files
from rosterdrop.web.status import chart, glance


@login_required
def home(request):
    """Operators land on the dashboard; a district admin on their district."""
    districts = districts_for(request.user)
    if not is_operator(request.user):
        district = districts.first()
        if district is None:
            return render(request, "web/no_access.html", status=403)
        return redirect("web:district", district.slug)
    syncs = list(
        Sync.objects.select_related("district").filter(dry_run=False).exclude(status="running")[:40]
    )
    errors = dict(
        Sync.objects.filter(pk__in=[s.pk for s in syncs])
        .annotate(n=Count("issues", filter=Q(issues__severity__in=("fatal", "error"))))
        .values_list("pk", "n")
    )
    return render(
        request,
        "web/dashboard.html",
        {
            "glances": [glance(d) for d in districts],
            "chart": chart(syncs, errors),
        },
    )


def _format_title(district) -> str:
    try:
        return get_format(district.format, district.slug).title
    except ValueError:
        return f"{district.format} (unknown)"


PAUSED_WEB_UPLOAD = (
    "This district is paused: send the files by SFTP or FTPS (they wait and are imported when "
    "the pause ends), or use Check only."
)


@district_view
def district(request, district):
    operator = is_operator(request.user)
    try:
        spec = get_format(district.format, district.slug)
    except ValueError:
        files, manifest = [], ""
    else:
        # A one-row manifest naming the account is filled in for it (ALO's Manifest.csv).
        manifest = spec.manifest.name if spec.manifest and spec.manifest.columns else ""
        files = [manifest] * bool(manifest) + [f.name for f in spec.files]
    return render(
        request,
        "web/district.html",
        {
            "district": district,
            "format_title": _format_title(district),
            "files": files,
            "manifest": manifest,
            "connection": connection_for(district, request),
            "subscriptions": district.subscriptions.all(),
            "subscription_form": SubscriptionForm(),
            "upload_form": UploadForm(),
            "settings_form": DistrictSettingsForm(instance=district) if operator else None,
            "pauses": district.pauses.filter(ends_on__gte=timezone.localdate()),
            "pause_form": PauseForm() if operator else None,
            "glance": glance(district),
            "max_upload": settings.WEB_MAX_UPLOAD_BYTES,
        },
    )


@district_view
def file_template(request, district, name: str):
    """A header-only CSV of one file of the district's format (or its filled-in manifest)."""
    text = file_templates(
        get_format(district.format, district.slug), district.slug, district.name
    ).get(name)
    if text is None or name == "README.txt":
        raise Http404("No such file in this format.")
    return attachment(text, name, "text/csv; charset=utf-8")


@district_view
def file_templates_zip(request, district):
    """Every file template of the district's format in one zip, the manifest filled in."""
    spec = get_format(district.format, district.slug)
    name = f"{district.slug}-{spec.slug}-templates.zip"
    return attachment(templates_zip(spec, district.slug, district.name), name, "application/zip")


@require_POST
@district_view
def upload(request, district):
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        messages.error(request, "Choose one .zip or the CSV files to upload.")
        return redirect("web:district", district.slug)
    files = form.cleaned_data["files"]
    if sum(f.size for f in files) > settings.WEB_MAX_UPLOAD_BYTES:
        messages.error(request, "These files are larger than the web upload allows; use SFTP.")
        return redirect("web:district", district.slug)
    if "check_only" in request.POST:
        return check_only(request, district, files)
    if district.paused_at(timezone.now()):
        messages.error(request, PAUSED_WEB_UPLOAD)
        return redirect("web:district", district.slug)
    try:
        uploads = receive_files(district, files, request.user.get_username(), client_ip(request))
    except QuotaExceeded as refused:
        messages.error(request, f"{refused}; nothing was kept.")
        return redirect("web:district", district.slug)
    wanted = claimed(district, uploads)  # as over SFTP: the rest is unmatched, with the reason
    for upload in uploads:
        if upload not in wanted:
            messages.error(request, upload.outcome)
    if not wanted:
        return redirect("web:uploads", district.slug)
    sync = start_import(district, wanted)
    messages.success(request, f"Received {len(wanted)} file(s); importing as sync {sync.pk}.")
    return redirect("web:sync", district.slug, sync.pk)


@require_POST
@district_view
def update_settings(request, district):
    require_operator(request)
    form = DistrictSettingsForm(request.POST, instance=district)
    if form.is_valid():
        form.save()
        audit_admin(request, f"changed settings of {district.slug}: {', '.join(form.changed_data)}")
        messages.success(request, "Settings saved.")
    else:
        messages.error(
            request,
            "Settings not saved: "
            + "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()),
        )
    return redirect("web:district", district.slug)


@require_POST
@district_view
def subscribe(request, district):
    form = SubscriptionForm(request.POST)
    if form.is_valid():
        Subscription.objects.update_or_create(
            district=district,
            email=form.cleaned_data["email"],
            defaults={"on_success": form.cleaned_data["on_success"]},
        )
        audit_admin(
            request, f"notifications of {district.slug}: added {form.cleaned_data['email']}"
        )
        messages.success(request, "Notification address saved.")
    else:
        messages.error(request, "Give a valid email address.")
    return redirect("web:district", district.slug)


@require_POST
@district_view
def unsubscribe(request, district, pk: int):
    sub = get_object_or_404(Subscription, pk=pk, district=district)
    sub.delete()
    audit_admin(request, f"notifications of {district.slug}: removed {sub.email}")
    return redirect("web:district", district.slug)


@district_view
def uploads(request, district):
    page = Paginator(district.uploads.prefetch_related("syncs"), 50).get_page(
        request.GET.get("page")
    )
    return render(request, "web/uploads.html", {"district": district, "page": page})


@district_view
def upload_raw(request, district, pk: int):
    """The file exactly as received, as an attachment under its original name."""
    item = get_object_or_404(Upload, pk=pk, district=district)
    login, ip = request.user.get_username(), client_ip(request)
    try:
        return raw_download(item, login=login, ip=ip, via="web")
    except NotKept as gone:
        raise Http404(str(gone)) from None
