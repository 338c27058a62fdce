"""Plain-text summaries for the terminal."""

from typing import Any

SHOWN = 20


def describe(result: dict[str, Any], reason: str = "") -> str:
    lines = []
    if result.get("format"):
        lines.append(f"Format: {result['format']}" + (f" ({reason})" if reason else ""))
    if "status" in result:
        lines.append(f"Sync {result['sync']}: {result['status']}. {result.get('message', '')}")
    for f in result.get("files", []):
        lines.append(f"  {f['name']}: {f['rows']} rows, {f['encoding']}")
    for entity, counts in result.get("changes", {}).items():
        shown = ", ".join(f"{n} {k}" for k, n in counts.items())
        lines.append(f"  {entity}: {shown}")
    for entity, rows in result.get("counts", {}).items():
        lines.append(f"  {entity}: {rows} records")
    issues = result.get("issues", [])
    by_severity = {
        s: sum(1 for i in issues if i["severity"] == s) for s in ("fatal", "error", "warning")
    }
    lines.append(
        "Issues: " + ", ".join(f"{n} {s}" for s, n in by_severity.items())
        if issues
        else "No issues."
    )
    for issue in issues[:SHOWN]:
        where = ":".join(str(x) for x in (issue["file"], issue["line"]) if x)
        lines.append(f"  [{issue['severity']}] {issue['code']} {where} {issue['message']}")
    if len(issues) > SHOWN:
        lines.append(f"  ... and {len(issues) - SHOWN} more (use --json for all)")
    return "\n".join(lines)
