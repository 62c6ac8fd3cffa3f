"""core/queue.py: pseudonyms, the seeded draw, admission tokens and the fairness log."""

from __future__ import annotations

import time

import msgspec
import pytest

from core.queue import (
    AUDIENCE,
    FIFO_BASE,
    GENESIS_HASH,
    ISSUER,
    AdmissionClaims,
    AdmissionRequired,
    LogEntry,
    commitment,
    eta_s,
    expected_order,
    new_seed,
    pre_queue_score,
    pseudonym,
    seal,
    sign_admission,
    stream_fields,
    verify_admission,
    verify_log,
)
from core.tickets import generate_private_key_pem, jwks, signing_key


def test_pseudonyms_are_per_event_and_keyed() -> None:
    a = pseudonym(b"k", 1, "ana")
    assert a == pseudonym(b"k", 1, "ana") and len(a) == 16
    assert a != pseudonym(b"k", 2, "ana")  # unlinkable across events
    assert a != pseudonym(b"other", 1, "ana")  # nobody without the key can compute it


def test_pre_queue_scores_are_below_the_fifo_base_and_depend_on_the_seed() -> None:
    seed, _ = new_seed()
    pids = [f"{i:016x}" for i in range(200)]
    assert all(0 <= pre_queue_score(seed, p) < FIFO_BASE for p in pids)
    order = sorted(pids, key=lambda p: pre_queue_score(seed, p))
    other = sorted(pids, key=lambda p: pre_queue_score(new_seed()[0], p))
    assert order != pids and order != other


def test_eta_rounds_up() -> None:
    assert eta_s(1, 60) == 1 and eta_s(61, 60) == 61 and eta_s(1, 120) == 1
    assert eta_s(3, 120) == 2


def _log(seed: str, rate: int = 60) -> list[LogEntry]:
    fields = [
        {"kind": "commit", "at": 0, "commitment": commitment(seed), "rate": rate, "opens": 1000},
        {"kind": "join", "at": 10, "pid": "p1", "pre": True},
        {"kind": "join", "at": 20, "pid": "p2", "pre": True},
        {"kind": "open", "at": 1000, "waiting": 2},
        {"kind": "reveal", "at": 1000, "seed": seed},
        {"kind": "join", "at": 1100, "pid": "p3", "pre": False},
    ]
    pre = sorted(["p1", "p2"], key=lambda p: pre_queue_score(seed, p))
    for n, pid in enumerate([*pre, "p3"], start=1):
        fields.append({"kind": "admit", "at": 1000 + n * 1000, "pid": pid, "position": n})
    entries: list[LogEntry] = []
    prev = GENESIS_HASH
    for seq, f in enumerate(fields, start=1):
        entry = seal({"seq": seq, **f}, prev)
        entries.append(entry)
        prev = entry.hash
    return entries


def test_a_fair_log_verifies() -> None:
    seed, _ = new_seed()
    entries = _log(seed)
    verdict = verify_log(entries)
    assert verdict.ok, verdict.problems
    assert verdict.head == entries[-1].hash and verdict.entries == len(entries)
    assert expected_order(entries, seed)[2] == "p3"


def test_a_modified_entry_breaks_the_chain() -> None:
    entries = _log(new_seed()[0])
    entries[1] = msgspec.structs.replace(entries[1], pid="px")
    assert any("entry 2: hash" in p for p in verify_log(entries).problems)


def test_a_reordered_admission_fails_even_with_a_rebuilt_chain() -> None:
    seed, _ = new_seed()
    entries = _log(seed)
    admits = [e for e in entries if e.kind == "admit"]
    swapped = [*entries[: -len(admits)], admits[1], admits[0], admits[2]]
    prev, rebuilt = GENESIS_HASH, []
    for seq, e in enumerate(swapped, start=1):
        f = {k: v for k, v in msgspec_builtins(e).items() if k not in ("seq", "prev", "hash")}
        entry = seal({"seq": seq, **f}, prev)
        rebuilt.append(entry)
        prev = entry.hash
    verdict = verify_log(rebuilt)
    assert not verdict.ok and any("admitted 1th" in p for p in verdict.problems)


def test_a_wrong_seed_or_a_too_fast_admission_fails() -> None:
    seed, _ = new_seed()
    entries = _log(seed, rate=1)  # 1/min: three admissions in 3 s is too fast
    assert any("above 1/min" in p for p in verify_log(entries).problems)
    fields = [msgspec_builtins(e) for e in _log(seed)]
    fields[4]["seed"] = new_seed()[0]
    prev, forged = GENESIS_HASH, []
    for f in fields:
        entry = seal({k: v for k, v in f.items() if k not in ("prev", "hash")}, prev)
        forged.append(entry)
        prev = entry.hash
    assert "the revealed seed does not match its commitment" in verify_log(forged).problems


def msgspec_builtins(entry: LogEntry) -> dict[str, object]:
    return {k: v for k, v in msgspec.to_builtins(entry).items() if v is not None}


def test_stream_fields_are_typed() -> None:
    assert stream_fields({b"kind": b"join", b"at": b"5", b"pid": b"ab", b"pre": b"1"}) == {
        "kind": "join",
        "at": 5,
        "pid": "ab",
        "pre": True,
    }


def _claims(**changes: object) -> AdmissionClaims:
    now = int(time.time())
    base = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": "ana", "event": 7, "pid": "p",
        "iat": now, "exp": now + 600, "max_holds": 2, "max_seats": 6,
    }  # fmt: skip
    return AdmissionClaims(**{**base, **changes})  # type: ignore[arg-type]


def test_admission_tokens_are_bound_to_fan_and_event() -> None:
    pem = generate_private_key_pem()
    key, keys = signing_key(pem), jwks([pem])
    token = sign_admission(_claims(), key)
    assert verify_admission(token, keys, sub="ana", event_id=7).pid == "p"
    cases = {
        "missing": (None, "ana", 7),
        "other event": (token, "ana", 8),
        "another fan": (token, "ben", 7),
        "expired": (sign_admission(_claims(exp=int(time.time()) - 5), key), "ana", 7),
        "not signed": (
            sign_admission(_claims(), signing_key(generate_private_key_pem())),
            "ana",
            7,
        ),
        "malformed": ("x.y.z", "ana", 7),
    }
    for name, (tok, sub, event) in cases.items():
        with pytest.raises(AdmissionRequired) as info:
            verify_admission(tok, keys, sub=sub, event_id=event)
        assert info.value.status == 403, name


def test_holds_and_sales_come_from_the_seat_deltas() -> None:
    from core.queue import delta_fields

    hold = {b"op": b"hold", b"status": b"held", b"seats": b"A-1-1,A-1-2", b"hold": b"h1.0.ab"}
    assert delta_fields(b"1700000000123-0", hold) == {
        "kind": "hold", "at": 1700000000123, "ref": "h1.0.ab", "seats": 2,
    }  # fmt: skip
    sale = {b"op": b"sold", b"status": b"sold", b"seats": b"A-1-1", b"order": b"o-1"}
    assert delta_fields("5-1", sale) == {"kind": "sale", "at": 5, "ref": "o-1", "seats": 1}
    assert delta_fields("5-2", {b"op": b"expire", b"status": b"free", b"seats": b"A-1-1"}) is None


def test_proof_of_work_binds_challenge_subject_and_window() -> None:
    from core.queue import POW_WINDOW_S, ProofOfWorkRequired, check_pow, pow_challenge, pow_solves

    key, now, bits = b"k", 1_000_000.0, 8
    challenge = pow_challenge(key, 7, now)
    nonce = next(str(n) for n in range(100_000) if pow_solves(challenge, "ana", str(n), bits))
    check_pow(key, 7, "ana", f"{challenge}:{nonce}", bits, now)  # solved
    check_pow(key, 7, "ana", f"{challenge}:{nonce}", bits, now + POW_WINDOW_S)  # next window
    check_pow(key, 7, "ana", None, 0, now)  # off
    bad = {
        "missing": None,
        "another fan's solution": f"{challenge}:{_unsolved(challenge, 'ana', bits)}",
        "another event's challenge": f"{pow_challenge(key, 8, now)}:{nonce}",
        "a stale challenge": f"{challenge}:{nonce}",
        "a forged challenge": f"7.0.{'0' * 16}:{nonce}",
    }
    for name, proof in bad.items():
        at = now + 2 * POW_WINDOW_S if name == "a stale challenge" else now
        with pytest.raises(ProofOfWorkRequired) as info:
            check_pow(key, 7, "ana", proof, bits, at)
        assert info.value.status == 403 and info.value.extra["bits"] == bits, name


def _unsolved(challenge: str, sub: str, bits: int) -> str:
    from core.queue import pow_solves

    return next(str(n) for n in range(100_000) if not pow_solves(challenge, sub, str(n), bits))
