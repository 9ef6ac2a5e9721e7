# Load the Celery app with Django so that services can enqueue work.
from workers.celery import app as celery_app

__all__ = ["celery_app"]
