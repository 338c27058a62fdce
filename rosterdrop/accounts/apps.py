from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "rosterdrop.accounts"

    def ready(self) -> None:
        from rosterdrop.accounts import signals  # noqa: F401  (audit of web sign-ins)
