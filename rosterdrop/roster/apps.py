from django.apps import AppConfig


class RosterConfig(AppConfig):
    name = "rosterdrop.roster"

    def ready(self) -> None:
        from rosterdrop.roster import signals  # noqa: F401  (connects the receivers)
