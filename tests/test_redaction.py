"""Secrets stay out of reprs, URLs and text."""

from __future__ import annotations

import pytest

from syncflow import Secret
from syncflow._redaction import redact_text, redact_url


def test_secrets_never_show_in_reprs_or_urls() -> None:
    secret = Secret("hunter2-password")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret) and "hunter2" not in f"{secret}"
    assert redact_url("https://u:pw@host/x?access_token=abc&page=2") == "https://****@host/x?access_token=****&page=2"
    assert redact_text("token hunter2-password leaked", [secret]) == "token **** leaked"
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(secret)
