"""Reading a POSTed form (urlencoded or multipart): every text field, checked once.

aiohttp decodes a form with whatever charset the request declares, so `charset=utf-16` (or
a multipart part's own charset) can yield a lone surrogate, and an unknown charset name
raises LookupError. Both are answered here, for every page and the code exchange alike:
an unreadable form is a 400, a field with no UTF-8 form a 422 that names it.
"""

from __future__ import annotations

from aiohttp import web

from gateway.errors import BadRequest, Invalid
from gateway.text import NOT_UTF8, unencodable_field

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


async def read_fields(request: web.Request) -> list[tuple[str, str]]:
    """The form's text fields in order (files are ignored); BadRequest / Invalid otherwise.

    aiohttp's HTTPRequestEntityTooLarge passes through for the caller's surface to answer.
    """
    try:
        form = await request.post()
    except (ValueError, LookupError):  # undecodable bytes; a charset Python does not know
        raise BadRequest("the form could not be read") from None
    fields = [(name, value) for name, value in form.items() if isinstance(value, str)]
    bad = unencodable_field(fields)
    if bad is not None:
        raise Invalid([(bad, NOT_UTF8)])
    return fields
