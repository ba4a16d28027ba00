"""Credentials inside URIs: the one URL-aware masking function (:func:`mask_uris`) and its helpers.

A URI's user info runs from ``scheme://`` to the last ``@`` of its authority. A password may hold ``/ ? #``, a
blank or ``@`` (``openssl rand -base64`` gives ``/`` and ``+``) and a user name may hold ``@``, so the authority
cannot end at the first delimiter: in text, the user info ends at the last ``@`` of the URI's word that comes
before a ``?`` or ``#`` following an ``@`` (a query such as ``?run_id=a@b`` stays); a ``user:pass`` cut by a blank
runs on to the next word holding an ``@``. A whole configured value ends at its last ``@``.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_WORD_END = set("'\"<>`\n")  # besides blanks: quotes and brackets around a URI in messages and reprs
_HOST_PORT = re.compile(r"[^:/?#]*(?::\d*)?(?:[/?#].*)?")  # no user info: host[:port][/path]


def _word_end(text: str, start: int) -> int:
    end = start
    while end < len(text) and not text[end].isspace() and text[end] not in _WORD_END:
        end += 1
    return end


def _last_at(text: str, start: int, end: int) -> int | None:
    """The last ``@`` in ``text[start:end]`` before a ``?`` or ``#`` that follows an ``@``."""
    last = None
    for i in range(start, end):
        if text[i] == "@":
            last = i
        elif text[i] in "?#" and last is not None:
            break
    return last


def userinfo_end(text: str, start: int, whole: bool = False) -> int | None:
    """Index of the ``@`` that ends the user info of the URI whose authority starts at ``text[start]`` (just
    after ``://``); None when it has none. ``whole``: ``text[start:]`` is all one configured value."""
    if start >= len(text) or text[start] == "/":  # file:///path: no authority
        return None
    if whole:
        at = text.rfind("@", start)
        return at if at >= 0 else None
    end = _word_end(text, start)
    at = _last_at(text, start, end)
    if at is None and end < len(text) and text[end] in " \t" and not _HOST_PORT.fullmatch(text[start:end]):
        line_end = text.find("\n", end)
        line_end = len(text) if line_end < 0 else line_end
        nxt = text.find("@", end, line_end)  # user:pass cut by a blank: on to the next word with an '@'
        if nxt >= 0:
            at = _last_at(text, start, _word_end(text, nxt))
    return at


def _masked_userinfo(userinfo: str) -> str:
    """``user:***`` (the user name stays), or ``***`` for user info without a ``:`` (a token)."""
    user, colon, _ = userinfo.partition(":")
    return f"{user}:{MASK}" if colon else MASK


def mask_uris(text: str) -> str:
    """``text`` with the user info of every URI in it masked: ``scheme://user:***@host`` (``***@host`` for a
    token without a ``:``)."""
    out, pos = [], 0
    for m in SCHEME.finditer(text):
        if m.start() < pos:  # inside user info already masked
            continue
        at = userinfo_end(text, m.end())
        if at is None:
            continue
        out += [text[pos : m.end()], _masked_userinfo(text[m.end() : at])]
        pos = at
    return "".join(out) + text[pos:]


def without_userinfo(uri: str) -> str:
    """A configured URI with its user info dropped (``http://host:5000``): for links a browser opens."""
    m = SCHEME.match(uri)
    at = userinfo_end(uri, m.end(), whole=True) if m else None
    return uri if at is None else uri[: m.end()] + uri[at + 1 :]


def credentials(uri: str) -> list[str]:
    """The password inside a configured URI, as written and decoded (a bare user name is no secret: it stays)."""
    uri = uri.strip()
    m = SCHEME.match(uri)
    at = userinfo_end(uri, m.end(), whole=True) if m else None
    if at is None:
        return []
    _, colon, password = uri[m.end() : at].partition(":")
    return [s for s in dict.fromkeys([password, unquote(password)]) if colon and s]
