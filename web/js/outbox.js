// Purchases made without a connection wait here, in IndexedDB, with the
// Idempotency-Key they were given when the buyer pressed "Buy". Every attempt
// (now, on reconnect, after a reload) sends the same key, so the API answers
// every retry with the same order: one purchase, one order.
import { api, ApiError, OfflineError } from './api.js';
import { db } from './db.js';
import { forgetAdmission, gateSession, recordAdmission } from './gate.js';
import { newKey } from './dom.js';

const RETRYABLE = new Set([408, 425, 429, 500, 502, 503, 504]);
let retryTimer = null;

function emit(name, detail) {
  window.dispatchEvent(new CustomEvent(name, { detail }));
}

/** Queue an order for holdId (once per hold) and try to send it now. */
export async function queueOrder(hold) {
  const existing = (await db.all('outbox')).find((e) => e.kind === 'order' && e.holdId === hold.id);
  const entry = existing || {
    key: newKey(),
    kind: 'order',
    holdId: hold.id,
    eventId: hold.eventId,
    seats: hold.seats.map((s) => s.id),
    total: hold.total,
    currency: hold.currency,
    createdAt: Date.now(),
    offline: navigator.onLine === false,
  };
  if (!existing) await db.put('outbox', entry);
  await flush();
  // Still waiting (offline, or the API asked to retry later): say so.
  if (await db.get('outbox', entry.key)) emit('tb:order-queued', { entry });
  return entry;
}

export async function pending() {
  return db.all('outbox');
}

/**
 * Queue a gate check-in scanned while offline (the signature already verified, the
 * device's own rules passed). It carries its scanner session and the time of the scan.
 */
export async function queueCheckin(token, claims, session) {
  const entry = {
    key: newKey(),
    kind: 'checkin',
    token,
    claims,
    eventId: session.event_id,
    gate: session.gate,
    scannedAt: Date.now(),
    createdAt: Date.now(),
    offline: true,
  };
  await db.put('outbox', entry);
  emitCheckinsWaiting();
  return entry;
}

/**
 * A refusal judged on the device while offline (another event's ticket, one already
 * admitted here...), for the event's scan log once the API can be reached.
 */
export async function queueRefusal(claims, session, result) {
  const entry = {
    key: newKey(),
    kind: 'scanlog',
    eventId: session.event_id,
    scan: {
      gate: session.gate,
      result,
      scanned_at: Date.now(),
      ...(claims?.ticket ? { ticket_id: String(claims.ticket) } : {}),
      ...(claims?.seat ? { seat_id: String(claims.seat) } : {}),
    },
    createdAt: Date.now(),
  };
  await db.put('outbox', entry);
  return entry;
}

async function sendScanLog(entry) {
  try {
    await api.reportScans(entry.eventId, [entry.scan]);
    await db.delete('outbox', entry.key);
    return 'sent';
  } catch (err) {
    if (err instanceof OfflineError) return 'offline';
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      authBlocked = true;
      return 'auth';
    }
    if (err instanceof ApiError && RETRYABLE.has(err.status)) return { retryAfter: err.retryAfter || 5 };
    await db.delete('outbox', entry.key); // refused as malformed: nothing to keep
    return 'failed';
  }
}

/** Check-ins scanned offline and not yet recorded by the API. */
export async function waitingCheckins() {
  return (await db.all('outbox')).filter((e) => e.kind === 'checkin');
}

let authBlocked = false;
/** True when the last sync was refused for the session (401/403): sign in again. */
export function checkinsNeedLogin() {
  return authBlocked;
}

async function emitCheckinsWaiting() {
  const waiting = await waitingCheckins();
  emit('tb:checkins-waiting', { count: waiting.length, needLogin: authBlocked });
}

async function sendCheckin(entry) {
  // A check-in queued before scanner sessions existed goes with the device's session.
  const session = entry.eventId ? { event_id: entry.eventId, gate: entry.gate } : gateSession();
  if (!session) return 'auth';
  const ticketId = String(entry.claims?.ticket ?? '');
  try {
    const result = await api.checkin(entry.token, session, entry.scannedAt);
    await db.delete('outbox', entry.key);
    authBlocked = false;
    await recordAdmission(session.event_id, ticketId, result.checked_in_at, result.gate || session.gate);
    emit('tb:checkin-synced', { entry, result });
    return 'sent';
  } catch (err) {
    if (err instanceof OfflineError) return 'offline';
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      // An admission is never dropped because the session ended: keep it, ask the
      // operator to sign in again, and send it after (tb:auth flushes the outbox).
      entry.attempts = (entry.attempts || 0) + 1;
      await db.put('outbox', entry);
      authBlocked = true;
      return 'auth';
    }
    if (err instanceof ApiError && RETRYABLE.has(err.status)) return { retryAfter: err.retryAfter || 5 };
    // A definite answer (already used, another event, revoked...): shown, then done.
    await db.delete('outbox', entry.key);
    const p = err instanceof ApiError ? err.problem : {};
    if (err instanceof ApiError && err.code === 'already_used' && p.checked_in_at) {
      await recordAdmission(session.event_id, ticketId, p.checked_in_at, p.gate || '');
    } else {
      await forgetAdmission(session.event_id, ticketId);
    }
    emit('tb:checkin-synced', { entry, error: err });
    return 'failed';
  }
}

async function sendOne(entry) {
  if (entry.kind === 'checkin') return sendCheckin(entry);
  if (entry.kind === 'scanlog') return sendScanLog(entry);
  try {
    const res = await api.placeOrder(entry.holdId, entry.key);
    const order = res.data || {};
    await db.delete('outbox', entry.key);
    const record = { order_id: String(order.order_id || order.id), status: order.status || 'pending', hold_id: entry.holdId, event_id: entry.eventId, seats: entry.seats, total: entry.total, currency: entry.currency, key: entry.key, queued: Boolean(entry.offline || entry.attempts), placed_at: Date.now() };
    await db.put('kv', record, `order:${record.order_id}`);
    emit('tb:order-placed', { entry, order: record, wasQueued: entry.offline || entry.attempts > 0 });
    return 'sent';
  } catch (err) {
    if (err instanceof OfflineError) {
      entry.attempts = (entry.attempts || 0) + 1;
      entry.offline = true;
      await db.put('outbox', entry);
      emit('tb:order-queued', { entry });
      return 'offline';
    }
    if (err instanceof ApiError && (RETRYABLE.has(err.status) || err.status === 401)) {
      entry.attempts = (entry.attempts || 0) + 1;
      await db.put('outbox', entry);
      emit('tb:order-queued', { entry, error: err });
      return { retryAfter: err.retryAfter || Math.min(30, 2 ** entry.attempts) };
    }
    // A definite answer (hold expired, seats gone...): the purchase failed.
    await db.delete('outbox', entry.key);
    emit('tb:order-failed', { entry, error: err });
    return 'failed';
  }
}

async function flushNow() {
  const entries = (await db.all('outbox')).sort((a, b) => a.createdAt - b.createdAt);
  let wait = null;
  for (const entry of entries) {
    const outcome = await sendOne(entry);
    // Without a session every other check-in would be refused the same way: they wait.
    if (outcome === 'auth') break;
    if (outcome === 'offline') {
      // The device says it is online but the request failed (a flaky network, a
      // lost answer): try again soon, with the same key. Offline, 'online' will.
      if (navigator.onLine !== false) {
        clearTimeout(retryTimer);
        retryTimer = setTimeout(flush, Math.min(30, 2 ** (entry.attempts || 1)) * 1000);
      }
      return;
    }
    if (outcome && outcome.retryAfter) wait = Math.max(wait || 0, outcome.retryAfter);
  }
  if (wait) {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(flush, wait * 1000);
  }
  if (entries.some((e) => e.kind === 'checkin')) await emitCheckinsWaiting();
}

let flushing = null;
/** Send everything queued. One flush at a time, across tabs too (Web Locks). */
export function flush() {
  if (navigator.onLine === false) return Promise.resolve();
  if (flushing) return flushing;
  const run = navigator.locks ? navigator.locks.request('tb-outbox', flushNow) : flushNow();
  flushing = Promise.resolve(run).finally(() => {
    flushing = null;
  });
  return flushing;
}

export function startOutbox() {
  window.addEventListener('online', () => flush());
  flush();
}
