from datetime import datetime
from typing import Any

from ninja import Schema


class DistrictOut(Schema):
    slug: str
    name: str
    format: str
    paused: bool
    quiet_period_seconds: int
    removal_threshold: float

    @staticmethod
    def resolve_removal_threshold(obj) -> float:
        return obj.effective_removal_threshold


class UploadOut(Schema):
    id: int
    district: str
    filename: str
    size: int
    sha256: str
    source: str
    login: str
    source_ip: str | None
    received_at: datetime
    status: str
    outcome: str

    @staticmethod
    def resolve_district(obj) -> str:
        return obj.district.slug


class SyncOut(Schema):
    id: int
    district: str
    status: str
    format: str
    dry_run: bool
    uploads: list[int]
    files: list[dict[str, Any]]
    changes: dict[str, dict[str, int]]
    message: str
    started_at: datetime
    finished_at: datetime | None
    decided_by: str

    @staticmethod
    def resolve_district(obj) -> str:
        return obj.district.slug

    @staticmethod
    def resolve_uploads(obj) -> list[int]:
        return [u.pk for u in obj.uploads.all()]


class IssueOut(Schema):
    id: int
    severity: str
    code: str
    file: str
    line: int | None
    column: str
    value: str
    message: str


class ChangeOut(Schema):
    entity: str
    sourced_id: str
    action: str
    fields: list[dict[str, Any]]


class RecordOut(Schema):
    entity: str
    sourced_id: str
    status: str
    data: dict[str, Any]
    first_seen_at: datetime
    changed_at: datetime


class ErrorOut(Schema):
    detail: str
