"""Fixtures for SMTP end-to-end tests: one running instance per module with DNS and sink on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from smtp_e2e import MailSystem, start_mail_system


@pytest.fixture(scope="module")
def mailsys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailSystem]:
    """A running instance (alice with an alias, bob), DKIM key for school.example, loopback DNS and sink."""
    yield from start_mail_system(tmp_path_factory.mktemp("mail"))
