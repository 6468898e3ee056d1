"""WSGI entry point of the floor: `gunicorn -c gunicorn.conf.py bench.floor.wsgi:application`."""

import os

from django.core.wsgi import get_wsgi_application

os.environ["DJANGO_SETTINGS_MODULE"] = "bench.floor.settings"

application = get_wsgi_application()
