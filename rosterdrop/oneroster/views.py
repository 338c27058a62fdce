"""The OneRoster 1.2 Rostering REST service of each district, its token endpoint and its
discovery document. Errors are the binding's status-info object."""

import base64
import copy
import hashlib
import json
import tempfile
from urllib.parse import unquote, urlencode

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import EmptyResultSet
from django.db.models import Q, QuerySet
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from rosterdrop.audit.models import AuditEvent, record
from rosterdrop.ingest.models import Sync, changed_ids
from rosterdrop.oneroster import clients, endpoints
from rosterdrop.oneroster.objects import KINDS, Kind, Writer
from rosterdrop.oneroster.package import write_package
from rosterdrop.oneroster.position import HEADER, consistent_read
from rosterdrop.oneroster.query import Query, QueryError, read, selected
from rosterdrop.roster.models import MODELS

BASE = "ims/oneroster/rostering/v1p2"
# Matches read by ID and sorted here rather than found in row order (_page_ids).
FEW = 100_000
# Matches of a dateLastModified filter read by ID from the syncs' change rows (_changed).
CHANGED = 1_000_000
COUNT_SECONDS = 3600
DISCOVERY = (
    "discovery/onerosterv1p2rostersservice_openapi3_v1p0.json",
    "discovery/imsorv1p2_rostering_openapi3_v1p0.json",
)


class Refused(Exception):
    def __init__(self, status: int, code_minor: str, description: str):
        super().__init__(description)
        self.status, self.code_minor, self.description = status, code_minor, description


def status_info(status: int, code_minor: str, description: str) -> JsonResponse:
    body = {
        "imsx_codeMajor": "failure",
        "imsx_severity": "error",
        "imsx_description": description,
        "imsx_CodeMinor": {
            "imsx_codeMinorField": [
                {
                    "imsx_codeMinorFieldName": "TargetEndSystem",
                    "imsx_codeMinorFieldValue": code_minor,
                }
            ]
        },
    }
    response = JsonResponse(body, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="oneroster"'
    return response


def base_url(request: HttpRequest, slug: str) -> str:
    return request.build_absolute_uri(f"/oneroster/{slug}/{BASE}")


@require_GET
def service(request: HttpRequest, slug: str, rest: str) -> HttpResponse:
    if rest in DISCOVERY:
        return JsonResponse(discovery(request, slug))
    try:
        return _answer(request, slug, rest)
    except (Refused, QueryError) as refused:
        return status_info(refused.status, refused.code_minor, refused.description)


def _answer(request: HttpRequest, slug: str, rest: str) -> HttpResponse:
    token = _token(request)
    if token.client.district.slug != slug:
        raise Refused(403, "forbidden", "This token is for another district.")
    _throttle(token)
    found = endpoints.match(rest)
    if found is None:
        raise Refused(404, "unknownobject", f"No such endpoint: /{rest}.")
    endpoint, ids = found
    if not endpoints.scopes(endpoint.path) & set(token.scopes.split()):
        needed = " or ".join(sorted(endpoints.scopes(endpoint.path)))
        raise Refused(403, "forbidden", f"This path needs the scope {needed}.")
    district = token.client.district
    with consistent_read(district) as cursor:
        response = _read(request, slug, district, endpoint, ids, cursor)
    response[HEADER] = str(cursor)
    return response


def _read(
    request: HttpRequest, slug: str, district, endpoint, ids: dict, cursor: int
) -> HttpResponse:
    """The answer of a GET path, read in one state of the roster."""
    kind = KINDS[endpoint.kind]
    for name, parent in endpoint.parents:
        _exists(district, endpoints.BY_PATH[parent], ids[name])
    sync_times = _sync_times(district)
    writer = Writer(district, base_url(request, slug), sync_times)
    table = MODELS[kind.entity].objects.filter(district=district)
    chosen = table.filter(endpoint.select(district, ids))
    if endpoint.single:
        fields = selected(request.GET, kind)
        record = chosen.values(*kind.columns()).first()
        if record is not None:
            return JsonResponse({kind.one: _fields(writer.objects(kind, [record])[0], fields)})
        made = writer.made_object(kind, ids["sourcedId"]) if endpoint.made else None
        if made is None:
            raise Refused(404, "unknownobject", f"No {kind.one} {ids['sourcedId']}.")
        return JsonResponse({kind.one: _fields(made, fields)})
    query = read(request.GET, kind, district.pk, sync_times)
    changed = _changed(district, endpoint, ids, kind, query)
    if changed is not None:
        total = len(changed)
        found = _page(changed, query)
    else:
        chosen = chosen.filter(query.where)
        total = _count(chosen, cursor)
        found = _page_ids(chosen, query, total)
    page = list(table.filter(id__in=found).order_by(*query.order).values(*kind.columns()))
    body = {kind.many: [_fields(obj, query.fields) for obj in writer.objects(kind, page)]}
    response = HttpResponse(json.dumps(body), content_type="application/json")
    response["X-Total-Count"] = str(total)
    response["Link"] = _links(request, query.offset, query.limit, total)
    return response


def _changed(district, endpoint, ids: dict, kind: Kind, query: Query) -> list[int] | None:
    """The row IDs a whole collection's `dateLastModified>` filter selects, in order, read
    from the syncs' change rows (ingest.models.changed_ids) without reading a record but the
    page's; None for any other request, or for more than CHANGED matches."""
    if query.changed is None or query.order not in (["id"], ["-id"]):
        return None
    if endpoint.select(district, ids):  # a collection of some records only (/students)
        return None
    return changed_ids(district.pk, kind.entity, query.changed, CHANGED)


def _count(chosen: QuerySet, cursor: int) -> int:
    """X-Total-Count: counted once per state of the roster (the feed cursor names it), since
    a consumer paging through a collection asks the same count on every page."""
    try:
        sql, params = chosen.query.sql_with_params()
    except EmptyResultSet:
        return 0
    key = "oneroster-count:" + hashlib.sha256(repr((cursor, sql, params)).encode()).hexdigest()
    total = cache.get(key)
    if total is None:
        total = chosen.count()
        cache.set(key, total, timeout=COUNT_SECONDS)
    return total


def _page(ids: list[int], query: Query) -> list[int]:
    """The page of IDs in order (ascending): its slice, from the end for orderBy=desc."""
    ordered = ids[::-1] if query.order == ["-id"] else ids
    return ordered[query.offset : query.offset + query.limit]


def _page_ids(chosen: QuerySet, query: Query, total: int):
    """The row IDs of the page. A few matches (a dateLastModified filter, say): all their IDs
    from the index that finds them, sorted here; many: the database walks an index in row
    order (roster.models `_in_order`) past the offset, reading no record it skips."""
    end = query.offset + query.limit
    if total <= FEW and query.order in (["id"], ["-id"]):
        return _page(sorted(chosen.order_by().values_list("id", flat=True)), query)
    return chosen.order_by(*query.order).values("id")[query.offset : end]


def _token(request: HttpRequest):
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Refused(401, "unauthorisedrequest", "Send an OAuth 2 bearer token.")
    token = clients.token_for(value.strip())
    if token is None:
        raise Refused(401, "unauthorisedrequest", "The token is unknown, expired or revoked.")
    return token


def _throttle(token) -> None:
    """At most ONEROSTER_RATE_LIMIT requests a minute per client (0: no limit)."""
    limit = settings.ONEROSTER_RATE_LIMIT
    if not limit:
        return
    key = f"oneroster-rate:{token.client_id}"
    cache.add(key, 0, timeout=60)
    if cache.incr(key) > limit:
        raise Refused(429, "server_busy", f"More than {limit} requests a minute; retry later.")


def _exists(district, parent: endpoints.Endpoint, sourced_id: str) -> None:
    kind = KINDS[parent.kind]
    table = MODELS[kind.entity].objects.filter(district=district)
    if not table.filter(parent.select(district, {}) & Q(sourced_id=sourced_id)).exists():
        raise Refused(404, "unknownobject", f"No {parent.path.strip('/')} {sourced_id}.")


def _sync_times(district) -> dict[int, object]:
    """When each sync of the district was applied: the dateLastModified of what it changed."""
    syncs = Sync.objects.filter(district=district).values_list("pk", "finished_at", "started_at")
    return {pk: finished or started for pk, finished, started in syncs}


def _fields(obj: dict, fields: list[str] | None) -> dict:
    return obj if fields is None else {k: obj[k] for k in fields if k in obj}


def _links(request: HttpRequest, offset: int, limit: int, total: int) -> str:
    """RFC 8288 links to the first, previous, next and last pages."""
    last = max(total - 1, 0) // limit * limit
    pages = {"first": 0, "last": last}
    if offset > 0:
        pages["prev"] = max(offset - limit, 0)
    if offset + limit < total:
        pages["next"] = offset + limit
    params = request.GET.copy()
    links = []
    for rel, start in pages.items():
        params["offset"], params["limit"] = str(start), str(limit)
        url = request.build_absolute_uri(request.path) + "?" + urlencode(params, doseq=True)
        links.append(f'<{url}>; rel="{rel}"')
    return ", ".join(links)


def discovery(request: HttpRequest, slug: str) -> dict:
    """The official document localized: this district's server URL and the token URL."""
    doc = copy.deepcopy(endpoints.document())
    doc["servers"] = [{"url": base_url(request, slug), "description": "This district's roster."}]
    flow = doc["components"]["securitySchemes"]["OAuth2CC"]["flows"]["clientCredentials"]
    flow["tokenUrl"] = request.build_absolute_uri("/oneroster/token")
    return doc


def _oauth_error(error: str, description: str, status: int = 400) -> JsonResponse:
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Basic realm="oneroster"'
    response["Cache-Control"] = "no-store"
    return response


def _client_credentials(request: HttpRequest) -> tuple[str, str]:
    """client_secret_basic, else client_secret_post."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            client_id, _, secret = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return "", ""
        return unquote(client_id), unquote(secret)
    return request.POST.get("client_id", ""), request.POST.get("client_secret", "")


@csrf_exempt
@require_POST
def token(request: HttpRequest) -> JsonResponse:
    """OAuth 2.0 client credentials grant (RFC 6749 section 4.4)."""
    if request.POST.get("grant_type") != "client_credentials":
        return _oauth_error("unsupported_grant_type", "Only client_credentials is offered.")
    client_id, secret = _client_credentials(request)
    if not client_id:
        return _oauth_error("invalid_client", "Authenticate the client.", 401)
    try:
        issued = clients.issue_token(client_id, secret, request.POST.get("scope", ""))
    except clients.OAuthError as refused:
        return _oauth_error(refused.error, refused.description, refused.status)
    response = JsonResponse(
        {
            "access_token": issued.token,
            "token_type": "bearer",
            "expires_in": issued.expires_in,
            "scope": " ".join(f"{clients.SCOPE_PREFIX}{s}" for s in issued.scopes),
        }
    )
    response["Cache-Control"] = "no-store"
    return response


@csrf_exempt
@require_POST
def revoke(request: HttpRequest) -> HttpResponse:
    """RFC 7009 token revocation by the client that holds the token."""
    client_id, secret = _client_credentials(request)
    try:
        holder = clients.authenticate(client_id, secret)
    except clients.OAuthError as refused:
        return _oauth_error(refused.error, refused.description, refused.status)
    clients.revoke_token(request.POST.get("token", ""), holder)
    return HttpResponse(status=200)


def package_download(district, after, login: str, ip: str | None, via: str) -> FileResponse:
    """The OneRoster 1.2 CSV package as an attachment (bulk, or a delta after a sync), and
    the download in the audit log."""
    package = tempfile.TemporaryFile()  # noqa: SIM115 (FileResponse closes it)
    written = write_package(district, package, after)
    package.seek(0)
    since = f" since sync {after.pk}" if after else ""
    record(
        AuditEvent.Kind.DOWNLOAD,
        login=login,
        ip=ip,
        detail=f"{via}: OneRoster export of {district.slug}{since}",
    )
    name = f"{district.slug}-oneroster-{f'delta-{after.pk}' if after else 'bulk'}.zip"
    response = FileResponse(
        package, as_attachment=True, filename=name, content_type="application/zip"
    )
    response[HEADER] = str(written.cursor)
    return response
