"""Who may grant what: the rule that bounds key minting and revocation by the caller.

An :class:`Authority` is what a caller may hand on: a set of scopes and a list of resource
patterns (empty: every resource of the tenant). An API key's authority is its own scopes and
patterns; a console member's comes from their role (:data:`ROLE_PERMISSIONS`, the one map of
what each role may do, read by the console and by the API for console sessions); operator code
(manage.py commands, the admin, the demo) uses :data:`OPERATOR`, which covers everything.

The rule (:func:`covers`): a holder covers a key when

1. every scope of the key is one of the holder's scopes, and
2. the holder is tenant-wide (no patterns), or the key names at least one pattern and every
   one of its patterns is *within* one of the holder's patterns (:func:`pattern_within`).

A caller creates only keys it covers (and, when the caller expires, that expire no later than
it does: a key cannot outlive its maker); it sees, reads and revokes only keys it covers.
The rule is reflexive, so a key may always see and revoke itself.

``pattern_within(p, h)`` answers "does every name ``p`` matches also match ``h``" for the
fnmatch patterns of :func:`fnmatch.fnmatchcase` (``*``, ``?``, ``[...]``). It is sound and
deliberately incomplete: when it cannot prove containment it says no, so the worst a
conservative answer costs is a refused request, never a wider key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from functools import cache, lru_cache

from django.db.models import QuerySet

from kernel.errors import Forbidden
from tenants.models import ALL_SCOPES, ApiKey, Membership, Role, Scope, Tenant, User

# --- the authority of a caller -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authority:
    """What a caller may grant. ``resources`` empty means every resource of the tenant;
    ``expires_at`` is when the caller itself stops working (None: never). ``holder`` names
    the caller in refusals ("this API key", "a developer")."""

    scopes: frozenset[str]
    resources: tuple[str, ...] = ()
    expires_at: datetime | None = None
    holder: str = "this API key"

    @property
    def tenant_wide(self) -> bool:
        return not self.resources

    def covers_key(self, key: ApiKey) -> bool:
        """Whether ``key`` is within this authority (see :func:`covers`)."""
        return covers(self.scopes, self.resources, key.scopes, key.resources)


OPERATOR = Authority(scopes=frozenset(ALL_SCOPES), holder="an operator")
"""Operator code: all scopes, every resource, no expiry. Never for a tenant's caller."""


@dataclass(frozen=True, slots=True)
class RolePermissions:
    """What a console member may do by their role: ``scopes``, those of their session (the
    console's pages and API calls made with it; reading needs no scope), and ``keys``, the
    API keys they may create and revoke."""

    scopes: frozenset[str]
    keys: Authority

    @property
    def can_write(self) -> bool:
        """Whether the role changes resources and keys (a viewer only looks)."""
        return Scope.MANAGE.value in self.scopes


ROLE_PERMISSIONS: dict[str, RolePermissions] = {
    Role.OWNER: RolePermissions(
        scopes=frozenset(ALL_SCOPES),
        keys=Authority(scopes=frozenset(ALL_SCOPES), holder="an owner"),
    ),
    Role.ADMIN: RolePermissions(
        scopes=frozenset(ALL_SCOPES),
        keys=Authority(scopes=frozenset(ALL_SCOPES), holder="an admin"),
    ),
    # A developer creates and changes resources, but a manage key can mint and revoke keys:
    # handing one out would let a developer reach past their role (the owner's keys).
    Role.DEVELOPER: RolePermissions(
        scopes=frozenset(ALL_SCOPES),
        keys=Authority(
            scopes=frozenset({Scope.PUBLISH.value, Scope.CONSUME.value}), holder="a developer"
        ),
    ),
    Role.VIEWER: RolePermissions(
        scopes=frozenset(), keys=Authority(scopes=frozenset(), holder="a viewer")
    ),
}
"""Every role's permissions; every role is tenant-wide."""

_NO_ROLE = RolePermissions(
    scopes=frozenset(), keys=Authority(scopes=frozenset(), holder="this member")
)


def role_permissions(role: str) -> RolePermissions:
    """A console role's permissions; an unknown role holds nothing (fail closed)."""
    return ROLE_PERMISSIONS.get(role, _NO_ROLE)


def role_authority(role: str) -> Authority:
    """The keys a console role may create and revoke."""
    return role_permissions(role).keys


def member_authority(*, tenant: Tenant | str, user: User) -> Authority:
    """The authority of ``user`` in ``tenant`` by their role; nothing if not a member."""
    role = (
        Membership.objects.for_tenant(tenant)
        .filter(user=user)
        .values_list("role", flat=True)
        .first()
    )
    return role_authority(role or "")


def key_authority(
    *, tenant: Tenant | str, key_id: str, scopes: frozenset[str], resources: tuple[str, ...]
) -> Authority:
    """An API key's authority: its scopes and patterns, and its expiry (read from its row:
    the cached principal does not carry it)."""
    expires_at = (
        ApiKey.objects.for_tenant(tenant)
        .filter(pk=key_id)
        .values_list("expires_at", flat=True)
        .first()
    )
    return Authority(scopes=frozenset(scopes), resources=tuple(resources), expires_at=expires_at)


# --- the rule ----------------------------------------------------------------------------------


def covers(
    holder_scopes: frozenset[str] | set[str] | list[str],
    holder_resources: tuple[str, ...] | list[str],
    scopes: frozenset[str] | set[str] | list[str],
    resources: tuple[str, ...] | list[str],
) -> bool:
    """Whether a holder of ``holder_scopes`` / ``holder_resources`` may grant (and so see and
    revoke) a key of ``scopes`` / ``resources``.

    The key's scopes must be a subset of the holder's. A holder without patterns is
    tenant-wide and covers any patterns, none included. A holder with patterns covers only a
    key that has patterns, each within one of the holder's (:func:`pattern_within`): a key
    without patterns reaches every resource, which is more than any pattern list.
    """
    if not set(scopes) <= set(holder_scopes):
        return False
    return resources_within(resources, holder_resources)


def resources_within(
    resources: tuple[str, ...] | list[str], holder_resources: tuple[str, ...] | list[str]
) -> bool:
    """Condition 2 of :func:`covers` on its own."""
    if not holder_resources:
        return True
    if not resources:
        return False
    return all(pattern_within(p, holder_resources) is not None for p in resources)


def pattern_within(pattern: str, holder_resources: tuple[str, ...] | list[str]) -> str | None:
    """The first holder pattern that contains ``pattern``, or None."""
    return next((h for h in holder_resources if pattern_contained(pattern, h)), None)


def pattern_contained(pattern: str, holder: str) -> bool:
    """Whether every string ``pattern`` matches is also matched by ``holder`` (both
    fnmatchcase patterns like ``queue:orders`` or ``topic:events.*``).

    Equal patterns are contained. A literal (no ``*``, ``?`` or ``[``) is contained exactly
    when the holder matches it. Two globs are compared token by token: each ``?``, literal or
    ``[set]`` of ``pattern`` must be covered by one token of ``holder`` (``?`` covers any
    single token, a set covers the literals and sets inside it), a ``*`` of ``holder`` may
    absorb any run of tokens, and a ``*`` of ``pattern`` only by a ``*`` of ``holder``. Sets
    are understood only in their plain form (characters and same-kind ranges such as
    ``a-z``, ``0-9``, a ``-`` first or last); anything else is not proven, so refused.
    """
    if pattern == holder:
        return True
    if not any(c in pattern for c in "*?["):
        return fnmatchcase(pattern, holder)
    mine, theirs = _tokens(pattern), _tokens(holder)
    if mine is None or theirs is None:
        return False
    return _included(mine, theirs)


# --- glob containment --------------------------------------------------------------------------

_STAR = "*"
_ANY = "?"
# A token is _STAR, _ANY, a one-character literal or a set of characters. fnmatch has no
# escapes, so a literal "*" or "?" cannot occur and the markers are unambiguous.
Token = str | frozenset[str]


@lru_cache(maxsize=4096)
def _tokens(pattern: str) -> tuple[Token, ...] | None:
    """``pattern`` as tokens, or None when it uses a form this module does not prove."""
    out: list[Token] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if not out or out[-1] != _STAR:
                out.append(_STAR)
        elif c == "?":
            out.append(_ANY)
        elif c == "[":
            end = pattern.find("]", i)
            if end == -1:
                return None  # fnmatch reads an unclosed '[' literally; not worth proving
            members = _set_members(pattern[i:end])
            if members is None:
                return None
            out.append(members)
            i = end + 1
        else:
            out.append(c)
    return tuple(out)


def _same_kind(a: str, b: str) -> bool:
    return (
        (a.isdigit() and b.isdigit())
        or (a.islower() and b.islower())
        or (a.isupper() and b.isupper())
    )


def _set_members(body: str) -> frozenset[str] | None:
    """The characters of a plain ``[...]`` body, or None for any other form (empty,
    negated, nested, or a '-' that is neither a same-kind range nor first or last)."""
    if not body or body[0] in "!^" or "[" in body:
        return None
    members: set[str] = set()
    k, n = 0, len(body)
    while k < n:
        c = body[k]
        if c == "-":
            if k not in (0, n - 1):
                return None
            members.add(c)
            k += 1
        elif k + 2 < n and body[k + 1] == "-":
            low, high = c, body[k + 2]
            if not (c.isascii() and high.isascii() and _same_kind(low, high) and low <= high):
                return None
            members.update(chr(o) for o in range(ord(low), ord(high) + 1))
            k += 3
        else:
            members.add(c)
            k += 1
    return frozenset(members)


def _token_covers(holder: Token, token: Token) -> bool:
    """Whether one single-character token of the holder matches every string ``token``
    matches (neither is a star)."""
    if holder == _ANY:
        return True
    if token == _ANY:
        return False
    if isinstance(holder, frozenset):
        return token <= holder if isinstance(token, frozenset) else token in holder
    if isinstance(token, frozenset):
        return token == frozenset({holder})
    return token == holder


def _included(mine: tuple[Token, ...], theirs: tuple[Token, ...]) -> bool:
    """A sound test of L(mine) ⊆ L(theirs) by aligning tokens (see pattern_contained)."""

    @cache
    def step(i: int, j: int) -> bool:
        if j == len(theirs):
            return i == len(mine)
        holder = theirs[j]
        if holder == _STAR:
            # The holder's star absorbs nothing more, or one more token of ours (any kind).
            return step(i, j + 1) or (i < len(mine) and step(i + 1, j))
        if i == len(mine) or mine[i] == _STAR:
            return False
        return _token_covers(holder, mine[i]) and step(i + 1, j + 1)

    return step(0, 0)


# --- applying the rule -------------------------------------------------------------------------


def check_grant(
    authority: Authority,
    *,
    scopes: list[str],
    resources: list[str],
    expires_at: datetime | None,
) -> None:
    """Raise Forbidden (naming the field) unless ``authority`` may create a key of these
    (already validated) scopes, resources and expiry."""
    beyond = [scope for scope in scopes if scope not in authority.scopes]
    if beyond:
        raise Forbidden(
            f"{_cap(authority.holder)} cannot grant the scopes {beyond}; it holds "
            f"{[s for s in ALL_SCOPES if s in authority.scopes]}.",
            errors=[{"field": "scopes", "detail": f"Beyond the caller's scopes: {beyond}."}],
        )
    if not authority.tenant_wide:
        if not resources:
            raise Forbidden(
                f"{_cap(authority.holder)} is limited to the resources "
                f"{list(authority.resources)}: a key it creates must name resources within "
                "them.",
                errors=[{"field": "resources", "detail": "Required: name resources."}],
            )
        outside = [p for p in resources if pattern_within(p, authority.resources) is None]
        if outside:
            raise Forbidden(
                f"The resource patterns {outside} are not within the caller's resources "
                f"{list(authority.resources)}.",
                errors=[{"field": "resources", "detail": f"Beyond the caller's: {outside}."}],
            )
    if authority.expires_at is not None and (
        expires_at is None or expires_at > authority.expires_at
    ):
        raise Forbidden(
            f"{_cap(authority.holder)} expires at "
            f"{authority.expires_at.isoformat().replace('+00:00', 'Z')}: a key it creates "
            "must expire no later.",
            errors=[{"field": "expires_at", "detail": "Later than the caller's expiry."}],
        )


def keys_within(queryset: QuerySet[ApiKey], authority: Authority) -> QuerySet[ApiKey]:
    """The keys of ``queryset`` that ``authority`` covers, still a queryset (so it pages).
    Scopes are filtered in SQL; patterns, for a limited caller, in Python over the ids."""
    queryset = queryset.filter(scopes__contained_by=sorted(authority.scopes))
    if authority.tenant_wide:
        return queryset
    ids = [
        key_id
        for key_id, resources in queryset.exclude(resources=[]).values_list("id", "resources")
        if resources_within(resources, authority.resources)
    ]
    return queryset.filter(id__in=ids)


def require_tenant_wide(resources: tuple[str, ...] | list[str], what: str) -> None:
    """Tenant-wide data (usage, the audit trail) is not for a key limited to resources."""
    if resources:
        raise Forbidden(
            f"This API key is limited to the resources {list(resources)}; {what} covers the "
            "whole tenant."
        )


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]
