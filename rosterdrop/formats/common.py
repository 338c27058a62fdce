"""Building blocks shared by format specs: the outputs most vendor files feed."""

from typing import Any

from rosterdrop.formats.spec import Output

ITEM = "@item"


def person(
    user_id: str,
    fields: dict[str, str],
    role: str,
    school: str = "",
    schools: tuple[str, ...] = (),
    repeated: bool = False,
) -> tuple[Output, ...]:
    """A user and their role at a school (`school` column) or at several (`schools` columns).

    `repeated`: the same person may come on several rows (one per school or contact).
    """
    user = Output(
        "users", fields, key=(user_id,), constants={"enabledUser": "true"}, deduplicate=repeated
    )
    org = ITEM if schools else school
    roles = Output(
        "roles",
        {"userSourcedId": user_id, "orgSourcedId": org},
        key=(user_id, org),
        unpivot=schools,
        constants={"role": role, "roleType": "primary"},
        keep_extra=False,
        deduplicate=repeated,
    )
    return (user, roles) if school or schools else (user,)


def enrollment(
    class_id: str,
    user_id: str,
    role: str,
    school: str = "",
    key: tuple[str, ...] = (),
    primary: str = "",
    keep_extra: bool = False,
    **options: Any,
) -> Output:
    """A person in a class; keyed by the file's own enrollment ID or by class and person."""
    fields = {"classSourcedId": class_id, "userSourcedId": user_id}
    if school:
        fields["schoolSourcedId"] = school
    constants = {"role": role, **({"primary": primary} if primary else {})}
    return Output(
        "enrollments",
        fields,
        key=key or (class_id, user_id),
        constants=constants,
        keep_extra=keep_extra,
        **options,
    )
