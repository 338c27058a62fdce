"""Prometheus metrics at `/metrics`, read from the database at scrape time.

Every figure is a count of rows every process writes (uploads, syncs, bans), so any front end
answers for the whole deployment and a restart loses nothing: no in-process counter is needed.
Only counts and fixed labels (transport, status) leave: no district, login or student.
"""

import ipaddress
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from rosterdrop.inbox.models import Upload, UploadStatus
from rosterdrop.ingest.models import Sync, SyncStatus
from rosterdrop.intake import queue
from rosterdrop.intake.models import Ban

# Upper bounds (seconds) of the import time buckets: small districts in seconds, big in minutes.
IMPORT_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
# Syncs whose start-to-finish time is one import's: an approval keeps the first run's start, and
# an interrupted sync's finish is when recovery found it, so neither is timed.
TIMED = (
    SyncStatus.APPLIED,
    SyncStatus.APPLIED_WITH_ERRORS,
    SyncStatus.NO_CHANGES,
    SyncStatus.FAILED,
)


class DatabaseCollector(Collector):
    """The deployment's figures, counted in the database when Prometheus scrapes."""

    def collect(self) -> Iterator[Metric]:
        yield self._uploads()
        yield self._waiting()
        yield from self._queue()
        yield self._syncs()
        yield self._import_seconds()
        yield self._bans()

    def _uploads(self) -> Metric:
        metric = CounterMetricFamily(
            "rosterdrop_uploads_received",
            "Uploads received (files kept in the inbox), by transport.",
            labels=["transport"],
        )
        counts = _counts(Upload.objects, "source")
        for transport in Upload.Source.values:
            metric.add_metric([transport], counts.get(transport, 0))
        return metric

    def _waiting(self) -> Metric:
        waiting = Upload.objects.filter(status=UploadStatus.RECEIVED).count()
        return GaugeMetricFamily(
            "rosterdrop_uploads_waiting", "Uploads waiting for their import (queue depth).", waiting
        )

    def _queue(self) -> Iterator[Metric]:
        jobs = queue.depth()
        if jobs is None:  # SQLite: the worker thread reads the waiting uploads, no queue
            return
        metric = GaugeMetricFamily(
            "rosterdrop_queue_jobs",
            "Import jobs in the PostgreSQL job queue, waiting for a worker and running.",
            labels=["state"],
        )
        for state, count in jobs.items():
            metric.add_metric([state], count)
        yield metric

    def _syncs(self) -> Metric:
        metric = GaugeMetricFamily(
            "rosterdrop_syncs",
            "Syncs now in each status (finished statuses only grow).",
            labels=["status"],
        )
        counts = _counts(Sync.objects, "status")
        for status in SyncStatus.values:
            metric.add_metric([status], counts.get(status, 0))
        return metric

    def _import_seconds(self) -> Metric:
        timed = Sync.objects.filter(
            status__in=TIMED, decided_by="", finished_at__isnull=False
        ).annotate(
            took=ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
        )
        within = {
            f"le_{i}": Count("pk", filter=Q(took__lte=timedelta(seconds=bound)))
            for i, bound in enumerate(IMPORT_BUCKETS)
        }
        row = timed.aggregate(count=Count("pk"), total=Sum("took"), **within)
        buckets = [
            (floatToGoString(bound), row[f"le_{i}"]) for i, bound in enumerate(IMPORT_BUCKETS)
        ]
        return HistogramMetricFamily(
            "rosterdrop_import_seconds",
            "Time from the start of an import to its outcome (approved syncs not included).",
            buckets=[*buckets, ("+Inf", row["count"])],
            sum_value=(row["total"] or timedelta()).total_seconds(),
        )

    def _bans(self) -> Metric:
        banned = Ban.objects.filter(banned_until__gt=timezone.now()).count()
        return GaugeMetricFamily(
            "rosterdrop_defender_bans", "Source addresses the defender bans now.", banned
        )


def _counts(queryset, field: str) -> dict[str, int]:
    rows = queryset.order_by().values_list(field).annotate(n=Count("pk"))
    return dict(rows)


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(DatabaseCollector())


def allowed(address: str) -> bool:
    """Whether `address` is in ROSTERDROP_METRICS_ALLOW (addresses or networks)."""
    try:
        networks = [ipaddress.ip_network(a, strict=False) for a in settings.METRICS_ALLOW]
    except ValueError as exc:
        raise ImproperlyConfigured(f"ROSTERDROP_METRICS_ALLOW: {exc}") from None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    if not allowed(request.META.get("REMOTE_ADDR", "")):
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    try:
        body = generate_latest(REGISTRY)
    except DatabaseError:  # the scrape fails visibly (`up` stays 1, the figures are absent)
        return HttpResponse("database unavailable\n", status=503, content_type="text/plain")
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
