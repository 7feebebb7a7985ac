"""The bench service: a WSGI application served by gunicorn."""
