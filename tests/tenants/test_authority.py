"""The containment rule of tenants.authority: which keys a caller may grant, see and revoke.

The table cases pin the rule; the property tests check that pattern containment is sound
against fnmatchcase itself (whatever it says is contained really is, on any name)."""

from __future__ import annotations

from datetime import UTC, datetime
from fnmatch import fnmatchcase

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.errors import Forbidden
from tenants.authority import (
    OPERATOR,
    ROLE_PERMISSIONS,
    Authority,
    _tokens,
    check_grant,
    covers,
    pattern_contained,
)
from tenants.models import ALL_SCOPES, Role

ALL = frozenset(ALL_SCOPES)

# --- pattern_contained: (pattern, holder, contained) -------------------------------------------

PATTERN_CASES = [
    # equal patterns
    ("queue:orders", "queue:orders", True),
    ("topic:events.*", "topic:events.*", True),
    ("queue:[", "queue:[", True),  # even one this module cannot parse
    # a literal name within a glob: exactly fnmatchcase
    ("queue:orders", "queue:*", True),
    ("queue:orders", "queue:order?", True),
    ("queue:orders", "queue:[o]rders", True),
    ("queue:orders", "queue:[a-z]rders", True),
    ("queue:orders", "queue:ord*s", True),
    ("queue:orders", "queue:orders-*", False),
    ("queue:orders", "queue:order", False),
    ("queue:orders", "topic:*", False),  # another kind
    ("topic:orders", "queue:orders", False),
    ("queue:Orders", "queue:orders", False),  # case-sensitive, like may_access
    ("queue:orders", "queue:[A-Z]rders", False),
    # a narrower glob within a glob
    ("queue:orders-*", "queue:*", True),
    ("queue:orders-*", "queue:orders*", True),
    ("queue:orders-?", "queue:orders-*", True),
    ("queue:a?c", "queue:a?c", True),
    ("queue:a?c", "queue:a*c", True),
    ("queue:a[bc]d", "queue:a?d", True),
    ("queue:a[bc]d", "queue:a[a-z]d", True),
    ("queue:a[b]d", "queue:abd", True),
    ("queue:x[0-4]", "queue:x[0-9]", True),
    ("queue:x[0-9]", "queue:x[0-4]", False),
    ("queue:a*b*c", "queue:a*c", True),
    ("queue:**", "queue:*", True),
    ("queue:events.*.eu", "queue:events.*", True),
    # wider, or only overlapping: refused
    ("queue:*", "queue:orders", False),
    ("queue:*", "queue:orders-*", False),
    ("queue:orders*", "queue:orders-*", False),  # "orders" itself is not within
    ("queue:a*", "queue:a?", False),
    ("queue:?", "queue:[a-z]", False),
    ("queue:a?d", "queue:a[bc]d", False),
    ("topic:*", "queue:*", False),
    ("queue:*", "*", True),  # an operator-written pattern over every kind
    ("queue:*", "queue*", True),
    # forms not proven are refused
    ("queue:a[b", "queue:*", False),  # unclosed set
    ("queue:a[]]", "queue:*", False),  # empty-looking set
    ("queue:a[b-Z]", "queue:*", False),  # range across kinds
    ("queue:a[z-a]", "queue:*", False),  # reversed range
    ("queue:a[a-b-c]", "queue:*", False),  # a '-' in the middle
    ("queue:a[bc]", "queue:a[b", False),
]


@pytest.mark.parametrize(("pattern", "holder", "contained"), PATTERN_CASES)
def test_pattern_containment_table(pattern: str, holder: str, contained: bool) -> None:
    assert pattern_contained(pattern, holder) is contained


def test_set_forms_this_module_understands() -> None:
    """Plain sets parse to their characters: same-kind ranges and a '-' first or last."""
    assert _tokens("q:[-a]") == (*"q:", frozenset({"-", "a"}))
    assert _tokens("q:[a-c.]") == (*"q:", frozenset({"a", "b", "c", "."}))
    assert _tokens("q:[0-2_-]") == (*"q:", frozenset({"0", "1", "2", "_", "-"}))
    assert _tokens("q:a**b") == (*"q:a", "*", "b")


# --- covers: (holder scopes, holder resources, key scopes, key resources, covered) -------------

COVER_CASES = [
    # scopes: a subset, never more
    (ALL, [], ["publish"], [], True),
    (ALL, [], ALL_SCOPES, [], True),
    ({"manage"}, [], ["manage"], [], True),
    ({"manage"}, [], ["publish"], [], False),
    ({"manage"}, [], ["publish", "manage"], [], False),
    ({"publish", "consume"}, [], ["manage"], [], False),
    (set(), [], ["publish"], [], False),
    # a tenant-wide holder grants any resources
    (ALL, [], ["publish"], ["queue:orders"], True),
    (ALL, [], ["publish"], ["queue:*", "topic:*"], True),
    # a limited holder: only named resources within its own
    ({"manage"}, ["queue:orders"], ["manage"], ["queue:orders"], True),
    ({"manage"}, ["queue:orders"], ["manage"], [], False),  # no patterns = tenant-wide
    ({"manage"}, ["queue:orders"], ["manage"], ["queue:*"], False),
    ({"manage"}, ["queue:orders"], ["manage"], ["queue:orders", "queue:other"], False),
    ({"manage"}, ["queue:orders"], ["manage"], ["topic:orders"], False),
    ({"manage", "publish"}, ["queue:*"], ["publish"], ["queue:orders", "queue:a-*"], True),
    ({"manage"}, ["queue:a*", "topic:b*"], ["manage"], ["queue:ab", "topic:b.c*"], True),
    ({"manage"}, ["queue:orders"], ["publish"], ["queue:orders"], False),  # scope still counts
]


@pytest.mark.parametrize(
    ("holder_scopes", "holder_resources", "scopes", "resources", "covered"), COVER_CASES
)
def test_covers_table(
    holder_scopes: set[str],
    holder_resources: list[str],
    scopes: list[str],
    resources: list[str],
    covered: bool,
) -> None:
    assert covers(holder_scopes, holder_resources, scopes, resources) is covered


@pytest.mark.parametrize(("scopes", "resources"), [c[:2] for c in COVER_CASES])
def test_covers_is_reflexive(scopes: set[str], resources: list[str]) -> None:
    """Every holder covers a key exactly like itself: a key may always revoke itself."""
    assert covers(scopes, resources, list(scopes), resources)


def test_operator_and_roles() -> None:
    """Operators cover every key; owners and admins every scope; developers publish and
    consume only; viewers nothing. Every role is tenant-wide."""
    assert covers(OPERATOR.scopes, OPERATOR.resources, ALL_SCOPES, [])
    assert ROLE_PERMISSIONS[Role.OWNER].keys.scopes == ALL
    assert ROLE_PERMISSIONS[Role.ADMIN].keys.scopes == ALL
    assert ROLE_PERMISSIONS[Role.DEVELOPER].keys.scopes == {"publish", "consume"}
    assert ROLE_PERMISSIONS[Role.VIEWER].keys.scopes == frozenset()
    assert all(role.keys.tenant_wide for role in ROLE_PERMISSIONS.values())
    # the session's scopes (console pages, API calls with the session): a viewer only reads
    assert ROLE_PERMISSIONS[Role.OWNER].scopes == ALL
    assert ROLE_PERMISSIONS[Role.ADMIN].scopes == ALL
    assert ROLE_PERMISSIONS[Role.DEVELOPER].scopes == ALL
    assert ROLE_PERMISSIONS[Role.VIEWER].scopes == frozenset()
    assert [r for r, p in ROLE_PERMISSIONS.items() if p.can_write] == [
        Role.OWNER,
        Role.ADMIN,
        Role.DEVELOPER,
    ]


# --- check_grant: the refusal names the field -------------------------------------------------

LIMITED = Authority(
    scopes=frozenset({"manage", "publish"}),
    resources=("queue:orders",),
    expires_at=datetime(2999, 1, 1, tzinfo=UTC),
)


@pytest.mark.parametrize(
    ("request_", "field", "detail"),
    [
        (
            {"scopes": ["consume"], "resources": ["queue:orders"]},
            "scopes",
            "This API key cannot grant the scopes ['consume']; it holds ['publish', 'manage'].",
        ),
        (
            {"scopes": ["publish"], "resources": []},
            "resources",
            "This API key is limited to the resources ['queue:orders']: a key it creates must "
            "name resources within them.",
        ),
        (
            {"scopes": ["publish"], "resources": ["queue:orders", "queue:*"]},
            "resources",
            "The resource patterns ['queue:*'] are not within the caller's resources "
            "['queue:orders'].",
        ),
        (
            {"scopes": ["publish"], "resources": ["queue:orders"], "expires_at": None},
            "expires_at",
            "This API key expires at 2999-01-01T00:00:00Z: a key it creates must expire no later.",
        ),
        (
            {
                "scopes": ["publish"],
                "resources": ["queue:orders"],
                "expires_at": datetime(2999, 1, 2, tzinfo=UTC),
            },
            "expires_at",
            "This API key expires at 2999-01-01T00:00:00Z: a key it creates must expire no later.",
        ),
    ],
)
def test_check_grant_refusals(request_: dict, field: str, detail: str) -> None:
    arguments = {"expires_at": LIMITED.expires_at, **request_}
    with pytest.raises(Forbidden) as raised:
        check_grant(LIMITED, **arguments)

    assert raised.value.detail == detail
    assert [error["field"] for error in raised.value.errors or []] == [field]


def test_check_grant_allows_what_it_covers() -> None:
    check_grant(
        LIMITED, scopes=["publish"], resources=["queue:orders"], expires_at=LIMITED.expires_at
    )
    check_grant(OPERATOR, scopes=ALL_SCOPES, resources=[], expires_at=None)


# --- soundness against fnmatchcase ------------------------------------------------------------

ALPHABET = "ab-."
pattern_chars = st.sampled_from(["a", "b", "-", ".", "*", "?", "[ab]", "[a-b]", "[-a]", "["])
patterns = st.lists(pattern_chars, max_size=6).map(lambda parts: "q:" + "".join(parts))
names = st.text(alphabet=ALPHABET, max_size=8).map(lambda name: "q:" + name)


@settings(max_examples=400, deadline=None)
@given(pattern=patterns, holder=patterns, name=names)
def test_containment_is_sound(pattern: str, holder: str, name: str) -> None:
    """Whenever a pattern is said to be within a holder's, every name it matches is matched by
    the holder's too."""
    if pattern_contained(pattern, holder) and fnmatchcase(name, pattern):
        assert fnmatchcase(name, holder)


@settings(max_examples=400, deadline=None)
@given(pattern=patterns, name=names)
def test_tokens_mean_what_fnmatch_means(pattern: str, name: str) -> None:
    """A pattern this module parses is contained in itself and in "q:*", and its literal
    names are classified exactly as fnmatchcase does."""
    if _tokens(pattern) is None:
        return
    assert pattern_contained(pattern, "q:*")
    literal = name
    assert pattern_contained(literal, pattern) is fnmatchcase(literal, pattern)


NARROWER = {
    "*": ["", "a", "*", "a*", "*b", "?", "[ab]", "-*."],
    "?": ["a", "?", "[ab]", "."],
    "[ab]": ["a", "b", "[ab]", "[a]"],
    "[a-b]": ["a", "[ab]", "[a-b]"],
    "[-a]": ["-", "a", "[-a]"],
}
holder_parts = st.lists(st.sampled_from(["a", "b", "-", ".", *NARROWER]), max_size=6)


@st.composite
def narrowed(draw: st.DrawFn) -> tuple[str, str]:
    """A holder pattern and one made from it by narrowing some of its tokens."""
    parts = draw(holder_parts)
    narrow = [draw(st.sampled_from(NARROWER[part])) if part in NARROWER else part for part in parts]
    return "q:" + "".join(narrow), "q:" + "".join(parts)


@settings(max_examples=400, deadline=None)
@given(pair=narrowed(), name=names)
def test_narrowed_patterns_are_within_and_sound(pair: tuple[str, str], name: str) -> None:
    """A pattern narrowed token by token from the holder's is recognised as within it, and
    every name it matches, the holder's matches."""
    pattern, holder = pair
    assert pattern_contained(pattern, holder), pair
    if fnmatchcase(name, pattern):
        assert fnmatchcase(name, holder)
