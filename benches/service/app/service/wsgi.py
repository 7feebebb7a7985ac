"""A small WSGI service that uses the installed packages, so that the image is checked
to work on every platform (`python3 -m service.wsgi` prints one page and exits)."""

import datetime
import json
import platform

import babel.dates
import dateutil.parser
import django
import pygments
import pygments.formatters
import pygments.lexers


def page():
    """The body the service answers with."""
    when = dateutil.parser.isoparse("2026-12-06T12:00:00+00:00")
    snippet = pygments.highlight(
        "print('hello')", pygments.lexers.PythonLexer(), pygments.formatters.NullFormatter()
    )
    return {
        "machine": platform.machine(),
        "django": django.get_version(),
        "pygments": pygments.__version__,
        "date": babel.dates.format_date(when.date(), locale="de_DE"),
        "delta_days": (when - datetime.datetime(2026, 1, 1, tzinfo=when.tzinfo)).days,
        "snippet": snippet.strip(),
    }


def application(environ, start_response):
    """The WSGI entry point gunicorn serves."""
    body = json.dumps(page()).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


if __name__ == "__main__":
    print(json.dumps(page(), sort_keys=True))
