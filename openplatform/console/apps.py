from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "openplatform.console"
    label = "console"
