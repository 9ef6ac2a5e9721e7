"""WSGI entry point (gunicorn egressportal.wsgi)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "egressportal.settings")
application = get_wsgi_application()
