"""Content-Transfer-Encoding decoders fed piece by piece give the same bytes wherever the pieces are cut."""

from __future__ import annotations

import base64
import os
import random

import pytest

from schoolsuite.protocols.imap import cte


def _pieces(data: bytes, rng: random.Random) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rng.choice((1, 2, 3, 5, 77, 4096, 70000))
        out.append(data[i:i + n])
        i += n
    return out


def _fed(d, pieces: list[bytes]) -> bytes:
    return b"".join(d.feed(p) for p in pieces) + d.end()


@pytest.mark.parametrize("seed", range(5))
def test_base64_in_pieces_equals_whole(seed):
    """Base64 with CRLF every 76 characters and stray non-alphabet bytes decodes to the original bytes,
    however it is cut."""
    rng = random.Random(seed)
    raw = os.urandom(rng.randrange(0, 200_000))
    encoded = base64.encodebytes(raw).replace(b"\n", b" \r\n")
    assert _fed(cte.Base64(), _pieces(encoded, rng)) == raw
    assert _fed(cte.Base64(), [encoded]) == raw


def test_base64_padding_ends_the_data_and_missing_padding_is_tolerated():
    """The first '=' ends the data (RFC 2045 §6.8); a last group of 2-3 characters decodes as if padded; a lone
    last character is an error."""
    assert _fed(cte.Base64(), [b"QQ", b"==QUJD"]) == b"A"
    assert _fed(cte.Base64(), [b"QUJDQQ"]) == b"ABCA"
    with pytest.raises(cte.UndecodableError):
        _fed(cte.Base64(), [b"QUJDQ"])


@pytest.mark.parametrize("seed", range(5))
def test_quoted_printable_in_pieces_equals_whole(seed):
    """Quoted-printable with escapes, soft breaks, trailing blanks and lines far longer than a piece decodes
    to what decode_qp gives for the whole part, however it is cut."""
    rng = random.Random(seed)
    parts = [b"caf=C3=A9 =3D soft=\r\n", b"trailing \t \r\n", b"=41=4", b"==42", b"x" * 150_000, b"= \r\n",
             b"y=\t", b"\r\n", b"plain line\n", b"=\r", b"z"]
    data = b"".join(rng.choice(parts) for _ in range(300))
    assert _fed(cte.QuotedPrintable(), _pieces(data, rng)) == cte.decode_qp(data)


def test_unknown_encoding_has_no_decoder():
    """An unknown Content-Transfer-Encoding gets no decoder (BINARY answers NO [UNKNOWN-CTE])."""
    assert cte.decoder("x-uuencode") is None
    assert isinstance(cte.decoder(None), cte.Identity) and isinstance(cte.decoder("BASE64"), cte.Base64)


@pytest.mark.parametrize("n", [0, 1, 56, 57, 58, 114, 100_000])
def test_base64_lines_in_pieces_equal_the_whole_encoding(n):
    """Base64 lines of 76 characters and CRLF, encoded piece by piece, are the whole part's encoding, and
    size() says their length in advance."""
    rng = random.Random(n)
    raw = os.urandom(n)
    whole = base64.b64encode(raw)
    expected = b"".join(whole[i:i + 76] + b"\r\n" for i in range(0, len(whole), 76))
    assert _fed(cte.Base64Lines(), _pieces(raw, rng)) == expected
    assert cte.Base64Lines.size(n) == len(expected)
