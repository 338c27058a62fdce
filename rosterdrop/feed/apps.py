from django.apps import AppConfig


class FeedConfig(AppConfig):
    name = "rosterdrop.feed"
    label = "feed"
    verbose_name = "Change feed"
