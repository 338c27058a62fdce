"""Custom import templates, Istation's flow: kind -> sample -> columns -> check and save.

The draft lives in the session (one per district) and its sample file in storage (the data
folder, or the bucket every front end of a deployment shares, so that the draft's next step
may reach any of them), so nothing reaches the database before the last step. What a
template is and how it is checked belongs to rosterdrop.custom (suggest, try_sample,
save_template); these views only walk a district admin (or an operator) through it.
"""

import contextlib
import json
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from rosterdrop import process, storage
from rosterdrop.accounts.decorators import audit_admin, district_view
from rosterdrop.custom.models import ImportTemplate
from rosterdrop.custom.templates import (
    KIND_TITLES,
    KINDS,
    export_json,
    feeds,
    mapping_problems,
    read_sample,
    save_template,
    suggested_columns,
    try_sample,
)
from rosterdrop.formats import CUSTOM, FORMATS
from rosterdrop.formats.spec import Type
from rosterdrop.ingest.findings import Failure
from rosterdrop.web.downloads import attachment
from rosterdrop.web.forms import TemplateKindForm, TemplateSampleForm, TemplateSaveForm

STEPS = ("What the file holds", "Sample file", "Columns", "Check and save")
SAMPLE_MAX_BYTES = 20 << 20  # a sample, not a whole export
SAMPLE_KEPT_SECONDS = 24 * 3600  # abandoned drafts' samples are removed after this
DATE_FORMATS = (
    ("%Y-%m-%d", "2017-04-02"),
    ("%m/%d/%Y", "04/02/2017 (month first)"),
    ("%d/%m/%Y", "02/04/2017 (day first)"),
    ("%d.%m.%Y", "02.04.2017"),
    ("%Y%m%d", "20170402"),
)


SAMPLES = "template-samples"  # the storage folder of the drafts' samples


def _sample_key(token: str) -> str:
    return f"{SAMPLES}/{token}"


@contextlib.contextmanager
def _sample(token: str) -> Iterator[Path]:
    """The sample as a local file while the block runs: where the data folder keeps it, or a
    copy from shared storage, deleted after."""
    kept = storage.backend()
    if kept.local:
        yield settings.DATA_DIR / _sample_key(token)
        return
    work = settings.DATA_DIR / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    work = process.mkdtemp("sample-", work)  # named for recovery, were this process to die
    try:
        with contextlib.closing(kept.open(_sample_key(token))) as body:
            (work / "sample").write_bytes(body.read())
        yield work / "sample"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _key(district) -> str:
    return f"template-draft:{district.pk}"


def _draft(request, district) -> dict:
    """The draft in progress; one whose sample was cleared away starts again."""
    draft = request.session.get(_key(district), {})
    if draft.get("sample") and not storage.backend().exists(_sample_key(draft["sample"])):
        del request.session[_key(district)]
        return {}
    return draft


def _forget(request, district) -> None:
    """Drop the draft and its sample file (saved, or replaced by a new draft)."""
    token = request.session.pop(_key(district), {}).get("sample", "")
    if token:
        storage.backend().delete(_sample_key(token))


def _keep_sample(upload) -> str:
    """Store the sample under a random name; clear samples of drafts abandoned long ago."""
    kept = storage.backend()
    kept.prune(SAMPLES, time.time() - SAMPLE_KEPT_SECONDS)
    token = secrets.token_hex(16)
    kept.put(_sample_key(token), b"".join(upload.chunks()))  # at most SAMPLE_MAX_BYTES
    return token


def _template(district, draft: dict, **values) -> ImportTemplate:
    """The draft as an unsaved template (the sample's name until the admin gives another)."""
    fields = ("kind", "columns", "delimiter", "encoding", "date_format")
    values = {"file_name": draft["sample_name"], **{k: draft[k] for k in fields}, **values}
    return ImportTemplate(district=district, **values)


def _check(district, draft: dict) -> dict:
    with _sample(draft["sample"]) as path:
        return try_sample(_template(district, draft), path, district.fallback_encoding)


def _page(request, district, step: int, name: str, context: dict, status: int = 200):
    draft = _draft(request, district)
    context = {
        "district": district,
        "steps": STEPS,
        "step": step,
        "draft": draft,
        "kind_title": KIND_TITLES.get(draft.get("kind", ""), ""),
        "custom_format": district.format == CUSTOM,
        "format_title": FORMATS[CUSTOM].title,
        **context,
    }
    return render(request, f"web/{name}.html", context, status=status)


@district_view
def templates(request, district):
    return _page(
        request,
        district,
        0,
        "templates",
        {"templates": district.templates.all(), "titles": KIND_TITLES},
    )


@district_view
def kind(request, district):
    form = TemplateKindForm(request.POST or None, initial=_draft(request, district))
    if request.method == "POST" and form.is_valid():
        _forget(request, district)
        request.session[_key(district)] = {"kind": form.cleaned_data["kind"]}
        return redirect("web:template_sample", district.slug)
    kinds = [
        {"slug": k, "title": t, "fields": KINDS[k], "feeds": feeds(k)}
        for k, t in KIND_TITLES.items()
    ]
    return _page(request, district, 1, "template_kind", {"form": form, "kinds": kinds})


@district_view
def sample(request, district):
    draft = _draft(request, district)
    if "kind" not in draft:
        return redirect("web:template_kind", district.slug)
    form = TemplateSampleForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["sample"]
        if upload.size > SAMPLE_MAX_BYTES:
            form.add_error("sample", "A sample of a few hundred rows is enough; this is larger.")
        else:
            token = _keep_sample(upload)
            encoding = form.cleaned_data["encoding"]
            try:
                with _sample(token) as path:
                    found = read_sample(
                        path, form.cleaned_data["delimiter"], encoding or district.fallback_encoding
                    )
            except Failure as failure:
                storage.backend().delete(_sample_key(token))
                form.add_error("sample", failure.finding.message)
            else:
                _forget(request, district)
                request.session[_key(district)] = {
                    "kind": draft["kind"],
                    "sample": token,
                    "sample_name": Path(upload.name).name,
                    "header": found.header,
                    "delimiter": found.delimiter,
                    "encoding": encoding,
                    "columns": suggested_columns(draft["kind"], found.header),
                    "date_format": DATE_FORMATS[0][0],
                }
                return redirect("web:template_columns", district.slug)
    status = 400 if form.errors else 200
    return _page(request, district, 2, "template_sample", {"form": form}, status)


def _column_rows(district, draft: dict) -> list[dict]:
    """Each source column with its first values, its field and whether the name suggested it.

    The values are read again from the sample, so no student data is kept in the session.
    """
    suggested = suggested_columns(draft["kind"], draft["header"])
    with _sample(draft["sample"]) as path:
        rows = read_sample(
            path, draft["delimiter"], draft["encoding"] or district.fallback_encoding
        ).rows
    return [
        {
            "index": i,
            "name": name,
            "values": [row[i] for row in rows if i < len(row) and row[i]],
            "target": draft["columns"].get(name, ""),
            "suggested": suggested[name] and suggested[name] == draft["columns"].get(name),
        }
        for i, name in enumerate(draft["header"])
    ]


@district_view
def columns(request, district):
    draft = _draft(request, district)
    if "header" not in draft:
        return redirect("web:template_sample", district.slug)
    fields = KINDS[draft["kind"]]
    if request.method == "POST":
        names = {f.name for f in fields}
        draft["columns"] = {
            name: value if (value := request.POST.get(f"col-{i}", "")) in names else ""
            for i, name in enumerate(draft["header"])
        }
        if request.POST.get("date_format") in dict(DATE_FORMATS):
            draft["date_format"] = request.POST["date_format"]
        request.session[_key(district)] = draft
    problems = mapping_problems(_template(district, draft))
    if request.headers.get("HX-Request"):  # a select changed: only the check below the table
        return render(request, "web/_template_mapping_check.html", {"problems": problems})
    if request.method == "POST" and not problems:
        return redirect("web:template_check", district.slug)
    context = {
        "template": _template(district, draft),
        "rows": _column_rows(district, draft),
        "fields": fields,
        "problems": problems,
        "date_formats": DATE_FORMATS if any(f.type == Type.DATE for f in fields) else (),
    }
    return _page(request, district, 3, "template_columns", context)


@district_view
def check(request, district):
    draft = _draft(request, district)
    if "header" not in draft:
        return redirect("web:template_sample", district.slug)
    result = _check(district, draft)
    form = TemplateSaveForm(request.POST or None, initial={"file_name": draft["sample_name"]})
    fatal = any(i["severity"] == "fatal" for i in result["issues"])
    if request.method == "POST" and form.is_valid():
        try:
            if fatal:
                raise ValueError("The sample cannot be read with this template; fix it first.")
            saved = save_template(_template(district, draft, **form.cleaned_data))
        except ValueError as exc:
            form.add_error(None, str(exc))
        else:
            _forget(request, district)
            audit_admin(request, f"saved import template {saved.file_name} of {district.slug}")
            messages.success(
                request, f"Saved: the next file named {saved.file_name} is read with this template."
            )
            return redirect("web:wizard", district.slug)
    labels = {f.name: f.label for f in KINDS[draft["kind"]]}
    context = {
        "result": result,
        "fatal": fatal,
        "form": form,
        "replaces": district.templates.filter(file_name=draft["sample_name"]).exists(),
        "mapped": [(s, labels[t]) for s, t in draft["columns"].items() if t],
        "ignored": [s for s, t in draft["columns"].items() if not t],
    }
    return _page(request, district, 4, "template_check", context, 400 if form.errors else 200)


@require_POST
@district_view
def delete(request, district, pk: int):
    template = get_object_or_404(ImportTemplate, pk=pk, district=district)
    template.delete()
    audit_admin(request, f"deleted import template {template.file_name} of {district.slug}")
    messages.success(request, f"Deleted the template for {template.file_name}.")
    return redirect("web:wizard", district.slug)


@district_view
def export(request, district):
    """The district's templates as JSON, for `rosterdrop template import` elsewhere."""
    body = json.dumps(export_json(district), indent=2, ensure_ascii=False)
    return attachment(body, f"{district.slug}-templates.json", "application/json; charset=utf-8")
