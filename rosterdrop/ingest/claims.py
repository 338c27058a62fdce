"""Which of a district's uploads its format claims, asked the same way by every path.

The SFTP/FTPS worker, the web upload and `rosterdrop import` all sort what arrived here,
before any import: a .zip is a package (its members are matched inside the import), a file
the format names (`FormatSpec.claim`) waits to be imported with the others, and any other
file is recorded as unmatched with the format's reason and its did-you-mean, and mailed.
"""

from dataclasses import dataclass, field

from rosterdrop import notify
from rosterdrop.districts.models import District
from rosterdrop.formats import get_format
from rosterdrop.inbox.models import Upload
from rosterdrop.ingest import states


@dataclass
class Claimed:
    packages: list[Upload] = field(default_factory=list)  # each imported on its own
    loose: list[Upload] = field(default_factory=list)  # imported together
    unmatched: list[Upload] = field(default_factory=list)  # recorded with the reason

    @property
    def importable(self) -> list[Upload]:
        return self.packages + self.loose


def claim_uploads(district: District, uploads: list[Upload], tell: bool = True) -> Claimed:
    """Sort uploads by what the district's format says of their names; `tell`: mail the
    district about unmatched files (not for a dry run). Raises ValueError for a format
    that does not exist."""
    spec = get_format(district.format, district.slug)
    claimed = Claimed()
    for upload in uploads:
        claim = spec.claim(upload.filename)
        if claim.package:
            claimed.packages.append(upload)
        elif claim.mine:
            claimed.loose.append(upload)
        else:
            unmatched(upload, claim.reason, tell)
            claimed.unmatched.append(upload)
    return claimed


def unmatched(upload: Upload, reason: str, tell: bool = True) -> None:
    """Record a file no format file or template claims, and tell the district why."""
    states.settle([upload], Upload.Status.UNMATCHED, reason, waiting_only=True)
    upload.status, upload.outcome = Upload.Status.UNMATCHED, reason[:1000]
    if tell:
        notify.upload_unmatched(upload)
