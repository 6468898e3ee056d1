"""Properties of the Obyte address check, against a transcription of ocore's `chash.js`."""

from __future__ import annotations

import base64
import hashlib

from hypothesis import given
from hypothesis import strategies as st

from cashback.validators import is_valid_obyte_address, make_obyte_address, normalize_address

BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
PI = "14159265358979323846264338327950288419716939937510"


def ocore_offsets() -> list[int]:
    """ocore's calcOffsets(160): running sums of pi's non-zero digits below 160."""
    offsets, offset = [], 0
    for digit in PI:
        if digit == "0":
            continue
        offset += int(digit)
        if offset >= 160:
            break
        offsets.append(offset)
    assert len(offsets) == 32
    return offsets


def ocore_is_chash_valid(encoded: str) -> bool:
    """ocore's isChashValid for 32 characters, step by step on a string of bits.

    ValidationUtils.isValidAddress also requires upper case: only the 32 upper-case base32
    characters are accepted here.
    """
    if len(encoded) != 32 or not set(encoded) <= set(BASE32):
        return False
    chash = base64.b32decode(encoded)
    bits = "".join(format(byte, "08b") for byte in chash)
    fragments, checksum_bits, start = [], [], 0
    for offset in ocore_offsets():
        fragments.append(bits[start:offset])
        checksum_bits.append(bits[offset])
        start = offset + 1
    fragments.append(bits[start:])
    clean = "".join(fragments)
    clean_data = bytes(int(clean[i : i + 8], 2) for i in range(0, len(clean), 8))
    checksum = bytes(int("".join(checksum_bits)[i : i + 8], 2) for i in range(0, 32, 8))
    full = hashlib.sha256(clean_data).digest()
    return checksum == bytes([full[5], full[13], full[21], full[29]])


def clean_data_of(address: str) -> bytes:
    """Return the 16 bytes of data an address carries (its checksum bits removed)."""
    bits = "".join(format(b, "08b") for b in base64.b32decode(address))
    checksum_at = set(ocore_offsets())
    clean = "".join(b for i, b in enumerate(bits) if i not in checksum_at)
    return int(clean, 2).to_bytes(16, "big")


data16 = st.binary(min_size=16, max_size=16)
base32_strings = st.text(alphabet=BASE32, min_size=32, max_size=32)


def test_the_transcription_accepts_a_known_address() -> None:
    assert ocore_is_chash_valid("WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355S")
    assert not ocore_is_chash_valid("WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355T")


@given(data16)
def test_a_made_address_is_valid_and_carries_its_data(data: bytes) -> None:
    address = make_obyte_address(data)

    assert len(address) == 32 and set(address) <= set(BASE32)
    assert is_valid_obyte_address(address)
    assert ocore_is_chash_valid(address)
    assert clean_data_of(address) == data
    assert normalize_address(f"obyte:{address}") == address
    assert normalize_address(f"byteball:{address}") == address


@given(data16, st.integers(0, 31), st.sampled_from(BASE32))
def test_changing_one_character_invalidates_an_address(
    data: bytes, position: int, replacement: str
) -> None:
    address = make_obyte_address(data)
    changed = address[:position] + replacement + address[position + 1 :]
    # A changed data bit must also match 32 new checksum bits: a 2^-32 chance, never seen here.
    assert is_valid_obyte_address(changed) == (changed == address)


@given(st.one_of(base32_strings, data16.map(make_obyte_address)))
def test_a_random_base32_string_is_valid_exactly_when_ocore_says_so(candidate: str) -> None:
    # Random strings are valid with a 2^-32 chance, so made addresses are mixed in.
    assert is_valid_obyte_address(candidate) == ocore_is_chash_valid(candidate)


@given(data16, st.integers(0, 31))
def test_a_lower_case_or_cut_address_is_refused(data: bytes, position: int) -> None:
    address = make_obyte_address(data)

    assert not is_valid_obyte_address(address.lower()) or address.lower() == address
    assert not is_valid_obyte_address(address[:position] + address[position + 1 :])
    assert not is_valid_obyte_address(address + "A")


@given(st.text(max_size=40))
def test_any_text_is_answered_with_a_boolean(text: str) -> None:
    assert is_valid_obyte_address(text) == ocore_is_chash_valid(text)
