"""When a district's files import: "Import now" for waiting loose files, and scheduled pauses
(summer, a term rollover) during which uploads are received but not imported."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect
from django.utils import timezone
from django.views.decorators.http import require_POST

from rosterdrop.accounts.decorators import audit_admin, district_view, operator_district_view
from rosterdrop.districts.models import Pause
from rosterdrop.intake import queue
from rosterdrop.web.forms import PauseForm


@require_POST
@district_view
def import_now(request, district):
    """The worker imports the waiting loose files at its next pass, quiet period or not."""
    if district.paused_at(timezone.now()):
        messages.error(request, "The district is paused: its files are imported when it ends.")
        return redirect("web:district", district.slug)
    district.import_requested_at = timezone.now()
    district.save(update_fields=["import_requested_at"])
    queue.wake(district)
    audit_admin(request, f"import now: waiting files of {district.slug}")
    messages.success(request, "The waiting files are being imported now.")
    return redirect("web:district", district.slug)


@require_POST
@operator_district_view
def pause_add(request, district):
    form = PauseForm(request.POST, instance=Pause(district=district))
    try:
        if not form.is_valid():
            raise ValidationError(form.errors.as_text())
        pause = form.save()
    except ValidationError as exc:
        messages.error(request, f"Pause not saved: {' '.join(exc.messages)}")
    else:
        audit_admin(request, f"paused {district.slug} {pause.starts_on} to {pause.ends_on}")
        messages.success(request, f"Paused from {pause.starts_on} to {pause.ends_on}.")
    return redirect("web:district", district.slug)


@require_POST
@operator_district_view
def pause_remove(request, district, pk: int):
    pause = get_object_or_404(Pause, pk=pk, district=district)
    pause.delete()
    queue.wake(district)
    audit_admin(request, f"removed pause {pause.starts_on} to {pause.ends_on} of {district.slug}")
    messages.success(request, "Pause removed; waiting files are imported in the order they came.")
    return redirect("web:district", district.slug)
