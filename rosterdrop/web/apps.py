from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "rosterdrop.web"
