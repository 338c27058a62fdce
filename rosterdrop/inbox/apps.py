from django.apps import AppConfig


class InboxConfig(AppConfig):
    name = "rosterdrop.inbox"
