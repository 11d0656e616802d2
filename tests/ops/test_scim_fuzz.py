"""Property tests of the SCIM grammar: arbitrary input ends as a SCIM 400, never as a server fault."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schoolsuite.protocols.http.admin import grammar, resources
from schoolsuite.protocols.http.admin.errors import ScimError

SEEDS = ['userName eq "a@b.c"', 'emails[type eq "work" and value co "@"]', 'not (active eq false)',
         'name.familyName sw "Mü"', 'meta.lastModified gt "2026-01-01T00:00:00Z"', 'title pr or x ne null']
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner,
                                                                                 max_size=3), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=80), st.sampled_from(SEEDS).flatmap(
    lambda seed: st.integers(0, len(seed)).flatmap(lambda cut: st.text(max_size=6).map(
        lambda junk: seed[:cut] + junk + seed[cut:])))))
def test_filters_parse_or_refuse(text: str) -> None:
    """parse_filter returns a tree that evaluates, or raises ScimError 400 — nothing else."""
    try:
        tree = grammar.parse_filter(text)
    except ScimError as exc:
        assert exc.status == 400
        return
    grammar.evaluate(tree, {"userName": "a@b.c", "emails": [{"value": "a@b.c"}], "active": True})


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["schemas", "Operations", "op", "path", "value"]), JSON, max_size=3),
       st.lists(st.fixed_dictionaries({"op": st.sampled_from(["add", "replace", "remove", "Replace", "x"]),
                                       "path": st.one_of(st.none(), st.sampled_from(
                                           ["active", "emails", 'emails[type eq "work"].value', "name.givenName",
                                            "userName", "members", "id", "bogus", "emails[", "a.b.c"]),
                                                         st.text(max_size=20)),
                                       "value": JSON}), min_size=1, max_size=4))
def test_patches_apply_or_refuse(extra: dict[str, Any], operations: list[dict[str, Any]]) -> None:
    """A PATCH body of any shape either yields a valid user spec or a SCIM 4xx error."""
    body = {"schemas": [resources.PATCH_OP], "Operations": operations, **extra}
    doc = {"schemas": [resources.USER], "id": "0" * 32, "userName": "a@school.example",
           "emails": [{"value": "a@school.example", "type": "work", "primary": True}], "active": True,
           "meta": {"version": 'W/"x"'}}
    try:
        patched = resources.apply_patch(doc, resources.parse_patch(body), resources.USER_ATTRS, resources.USER)
        resources.user_spec(patched)
    except ScimError as exc:
        assert 400 <= exc.status < 500


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["schemas", "userName", "emails", "name", "active", "password",
                                        "displayName", "members", "externalId", resources.USER_EXT, "x"]),
                       JSON, max_size=6),
       st.booleans())
def test_bodies_validate_or_refuse(body: dict[str, Any], group: bool) -> None:
    """A POST body of any shape becomes a spec or a SCIM 400 (user_spec / group_spec never crash)."""
    body = {"schemas": [resources.GROUP if group else resources.USER], **body}
    try:
        if group:
            resources.group_spec(body, "school.example")
        else:
            resources.user_spec(body)
    except ScimError as exc:
        assert exc.status == 400
