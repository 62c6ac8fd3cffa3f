// Gate scanner support: the ticket-signing public keys (JWKS), cached for
// offline use, and signature checks with WebCrypto (EdDSA/Ed25519 or ES256).
import { db } from './db.js';

// Where the API publishes the ticket-signing public keys (core/tickets.py).
const JWKS_URLS = ['/api/v1/tickets/jwks.json'];

function b64url(str) {
  const b64 = str.replace(/-/g, '+').replace(/_/g, '/');
  const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

export async function cachedJwks() {
  return (await db.get('kv', 'jwks')) || null;
}

/** Fetch the JWKS (online) and keep it; fall back to the cached copy. */
export async function refreshJwks() {
  if (navigator.onLine !== false) {
    for (const url of JWKS_URLS) {
      try {
        const res = await fetch(url, { headers: { Accept: 'application/json' } });
        if (!res.ok) continue;
        const body = await res.json();
        if (Array.isArray(body.keys)) {
          const value = { keys: body.keys, fetched_at: Date.now(), url };
          await db.put('kv', value, 'jwks');
          return value;
        }
      } catch {
        break; // offline after all
      }
    }
  }
  return cachedJwks();
}

function importParams(jwk, alg) {
  if (alg === 'ES256' || (jwk.kty === 'EC' && jwk.crv === 'P-256')) {
    return [{ name: 'ECDSA', namedCurve: 'P-256' }, { name: 'ECDSA', hash: 'SHA-256' }];
  }
  if (alg === 'EdDSA' || alg === 'Ed25519' || (jwk.kty === 'OKP' && jwk.crv === 'Ed25519')) {
    return [{ name: 'Ed25519' }, { name: 'Ed25519' }];
  }
  return null;
}

/**
 * Verify a ticket JWT against the JWKS. Returns {valid, claims, reason}.
 * Only the signature (and exp/nbf if present) is checked here; the gate's
 * online check-in is what marks a ticket used.
 */
export async function verifyTicket(token, jwks) {
  const parts = String(token || '').trim().split('.');
  if (parts.length !== 3) return { valid: false, reason: 'malformed' };
  let header;
  let claims;
  try {
    header = JSON.parse(new TextDecoder().decode(b64url(parts[0])));
    claims = JSON.parse(new TextDecoder().decode(b64url(parts[1])));
  } catch {
    return { valid: false, reason: 'malformed' };
  }
  if (!jwks?.keys?.length) return { valid: null, claims, reason: 'no_keys' };
  const candidates = jwks.keys.filter((k) => !header.kid || k.kid === header.kid);
  if (!candidates.length) return { valid: false, claims, reason: 'unknown_kid' };
  const data = new TextEncoder().encode(`${parts[0]}.${parts[1]}`);
  const sig = b64url(parts[2]);
  for (const jwk of candidates) {
    const params = importParams(jwk, header.alg);
    if (!params) continue;
    try {
      const { kid, alg, use, key_ops: ops, ...material } = jwk; // eslint-disable-line no-unused-vars
      const key = await crypto.subtle.importKey('jwk', material, params[0], false, ['verify']);
      if (await crypto.subtle.verify(params[1], key, sig, data)) {
        const now = Date.now() / 1000;
        if (claims.exp && claims.exp < now) return { valid: false, claims, reason: 'expired' };
        if (claims.nbf && claims.nbf > now + 60) return { valid: false, claims, reason: 'not_yet_valid' };
        return { valid: true, claims };
      }
    } catch {
      // Unsupported algorithm in this browser, or a bad key: try the next.
    }
  }
  return { valid: false, claims, reason: 'bad_signature' };
}

// ---- the scanner session: one event, one gate (docs/decisions/1051) ----

const SESSION_KEY = 'tb.gate.session';

/** {event_id, gate} of this device's shift, or null. */
export function gateSession() {
  try {
    const value = JSON.parse(localStorage.getItem(SESSION_KEY) || 'null');
    return value && Number.isInteger(value.event_id) && value.gate ? value : null;
  } catch {
    return null;
  }
}

export function setGateSession(value) {
  if (value) localStorage.setItem(SESSION_KEY, JSON.stringify({ event_id: value.event_id, gate: value.gate }));
  else localStorage.removeItem(SESSION_KEY);
}

// What the device knows about its event: the event (status, when its gates close), the
// tickets admitted (here or at any gate, from the API) and the revoked ones.
function ledgerKey(eventId) {
  return `gate:${eventId}`;
}

export async function gateLedger(eventId) {
  const ledger = (await db.get('kv', ledgerKey(eventId))) || { event: null, admitted: {}, revoked: {}, as_of: null };
  ledger.reissued = ledger.reissued || {};
  return ledger;
}

/** Merge a GET /events/{id}/gate answer into the device's ledger. */
export async function mergeSnapshot(eventId, snapshot) {
  const ledger = await gateLedger(eventId);
  ledger.event = snapshot.event;
  for (const a of snapshot.admitted || []) {
    const mine = ledger.admitted[a.ticket_id];
    if (!mine || mine.local) ledger.admitted[a.ticket_id] = { at: a.checked_in_at, gate: a.gate };
  }
  for (const id of snapshot.revoked || []) ledger.revoked[id] = true;
  for (const r of snapshot.reissued || []) ledger.reissued[r.ticket_id] = Math.max(ledger.reissued[r.ticket_id] || 0, r.generation);
  ledger.as_of = snapshot.as_of;
  await db.put('kv', ledger, ledgerKey(eventId));
  return ledger;
}

/** Remember an admission seen on this device (local: not yet confirmed by the API). */
export async function recordAdmission(eventId, ticketId, at, gate, local = false) {
  const ledger = await gateLedger(eventId);
  const known = ledger.admitted[ticketId];
  if (known && !known.local && local) return ledger;
  ledger.admitted[ticketId] = { at, gate, local };
  await db.put('kv', ledger, ledgerKey(eventId));
  return ledger;
}

export async function forgetAdmission(eventId, ticketId) {
  const ledger = await gateLedger(eventId);
  if (!ledger.admitted[ticketId]?.local) return;
  delete ledger.admitted[ticketId];
  await db.put('kv', ledger, ledgerKey(eventId));
}

/**
 * The gate's rules (core/gate.py), on the device, for a ticket whose signature verified:
 * {ok: true} or {ok: false, code, at?, gate?, ticketEvent?}. Same order as the API.
 */
export function judgeOffline(claims, session, ledger, now = Date.now()) {
  const ticketEvent = Number(claims.event ?? claims.event_id);
  const ticketId = String(claims.ticket ?? claims.ticket_id ?? '');
  if (ticketEvent !== session.event_id) return { ok: false, code: 'wrong_event', ticketEvent };
  // Revoked, or replaced by a reissue (only the newest generation's code is valid).
  if (ledger.revoked[ticketId] || Number(claims.gen || 0) < (ledger.reissued[ticketId] || 0)) return { ok: false, code: 'ticket_revoked' };
  const event = ledger.event;
  if (event && event.status === 'cancelled') return { ok: false, code: 'event_cancelled' };
  if (event && now > event.admits_until) return { ok: false, code: 'event_over' };
  const seen = ledger.admitted[ticketId];
  if (seen) return { ok: false, code: 'already_used', at: seen.at, gate: seen.gate };
  return { ok: true };
}
