"""SIS data (the rows as the district sent them) beside the roster as loaded."""

from django.core.paginator import Paginator
from django.db.models import Q, TextField
from django.db.models.functions import Cast
from django.http import Http404
from django.shortcuts import get_object_or_404, render

from rosterdrop.accounts.decorators import district_view
from rosterdrop.inbox.models import Upload
from rosterdrop.ingest.index_builds import building
from rosterdrop.ingest.models import with_sync_times
from rosterdrop.ingest.sent_rows import read_rows
from rosterdrop.roster.models import ENTITIES, MODELS, records
from rosterdrop.roster.schema import FIELDS
from rosterdrop.web.sis import indexed_rows, members, names

PAGE = 100


@district_view
def sis_data(request, district):
    """Pick an upload and one of its files; search its rows (latest import by default)."""
    uploads = list(district.uploads.exclude(status=Upload.Status.EXPIRED)[:200])
    chosen = None
    if request.GET.get("upload"):
        chosen = get_object_or_404(Upload, pk=request.GET["upload"], district=district)
    elif uploads:
        chosen = uploads[0]
    query = request.GET.get("q", "").strip()
    offset = max(int(request.GET.get("offset", "0") or 0), 0)
    rows = None
    indexing = False  # the file read while its index is being built
    files = names(chosen)
    name = request.GET.get("file") or next(iter(files), "")
    if chosen and name:
        if name not in files:
            raise Http404("No such file in this upload.")
        fallback = district.fallback_encoding
        rows = indexed_rows(chosen, name, fallback, query, offset, PAGE)
        if rows is None:  # not indexed (yet): the file is read
            indexing = building(chosen)
            with members(chosen) as found:
                if name in found:
                    rows = read_rows(found[name], fallback, query, offset, PAGE)
    return render(
        request,
        "web/sis.html",
        {
            "district": district,
            "uploads": uploads,
            "chosen": chosen,
            "files": files,
            "name": name,
            "query": query,
            "rows": rows,
            "indexing": indexing,
            "offset": offset,
            "page_size": PAGE,
            "next_offset": offset + PAGE,
            "prev_offset": max(offset - PAGE, 0),
        },
    )


def search_records(district, entity: str, query: str):
    """Records with `query` in any field or extra column, or with it as source ID."""
    found = records(district, entity)
    if query:
        found = found.annotate(_extra=Cast("metadata", TextField())).filter(
            Q(sourced_id=query)
            | Q(_extra__icontains=query)
            | Q.create([(f"{name}__icontains", query) for name in FIELDS[entity]], Q.OR)
        )
    return with_sync_times(found).order_by("sourced_id")


@district_view
def roster(request, district):
    entity = request.GET.get("entity", "users")
    if entity not in ENTITIES:
        raise Http404("No such entity.")
    query = request.GET.get("q", "").strip()
    status = request.GET.get("status", "active")
    records = search_records(district, entity, query)
    if status:
        records = records.filter(status=status)
    page = Paginator(records, PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "web/roster.html",
        {
            "district": district,
            "entity": entity,
            "entities": ENTITIES,
            "query": query,
            "status": status,
            "page": page,
            "columns": _columns(entity),
        },
    )


COLUMNS = {
    "users": ("givenName", "familyName", "username", "email", "grades"),
    "orgs": ("name", "type", "identifier"),
    "classes": ("title", "classCode", "classType", "schoolSourcedId"),
    "courses": ("title", "courseCode", "orgSourcedId"),
    "enrollments": ("role", "classSourcedId", "userSourcedId"),
    "roles": ("role", "userSourcedId", "orgSourcedId"),
    "agents": ("userSourcedId", "agentSourcedId"),
    "academicSessions": ("title", "type", "startDate", "endDate"),
    "demographics": ("birthDate", "sex"),
}


def _columns(entity: str) -> tuple[str, ...]:
    return COLUMNS.get(entity, ())


def _by_ids(district, entity: str, ids) -> dict:
    return {r.sourced_id: r for r in records(district, entity).filter(sourced_id__in=list(ids))}


@district_view
def record_detail(request, district, entity: str, sourced_id: str):
    """One record; for a person, their roles, enrollments (with class) and guardians."""
    if entity not in MODELS:
        raise Http404("No such entity.")
    record = get_object_or_404(MODELS[entity], district=district, sourced_id=sourced_id)
    context = {"district": district, "record": record, "fields": sorted(record.data.items())}
    if entity == "users":
        enrollments = list(records(district, "enrollments").filter(userSourcedId=sourced_id))
        classes = _by_ids(district, "classes", (e.classSourcedId for e in enrollments))
        links = list(records(district, "agents").filter(userSourcedId=sourced_id))
        wards = list(records(district, "agents").filter(agentSourcedId=sourced_id))
        people = _by_ids(
            district,
            "users",
            [a.agentSourcedId for a in links] + [w.userSourcedId for w in wards],
        )
        context |= {
            "roles": records(district, "roles").filter(userSourcedId=sourced_id),
            "enrollments": [(e, classes.get(e.classSourcedId)) for e in enrollments],
            "guardians": [(a, people.get(a.agentSourcedId)) for a in links],
            "wards": [(w, people.get(w.userSourcedId)) for w in wards],
        }
    if entity == "classes":
        enrolled = list(records(district, "enrollments").filter(classSourcedId=sourced_id))
        users = _by_ids(district, "users", (e.userSourcedId for e in enrolled))
        context["members"] = [(e, users.get(e.userSourcedId)) for e in enrolled]
    return render(request, "web/record.html", context)
