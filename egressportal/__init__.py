# The Celery app loads with Django so that services can send work by task name.
from .celery import app as celery_app

__all__ = ["celery_app"]
