// The TicketBuster REST API (/api/v1): JSON in, JSON or problem+json out.
import { canRefresh, freshToken, refreshSession, setToken } from './auth.js';

export const API = '/api/v1';

/** An RFC 9457 problem from the API. */
export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
    this.code = String(this.problem.type || '').split('/').pop() || String(status);
    this.retryAfter = retryAfter ? Number(retryAfter) || 1 : null;
  }
}

/** The request never reached the server (offline, DNS, connection reset). */
export class OfflineError extends Error {
  constructor(cause) {
    super('offline');
    this.cause = cause;
  }
}

// Server time minus device time, learnt from Date headers; hold countdowns use it.
let clockSkewMs = 0;
export function serverNow() {
  return Date.now() + clockSkewMs;
}
function learnClock(res) {
  const date = res.headers.get('Date');
  if (!date) return;
  const server = Date.parse(date);
  if (!Number.isNaN(server)) clockSkewMs = Math.abs(server - Date.now()) > 2000 ? server - Date.now() : 0;
}

/**
 * request('/events', {method, body, idempotencyKey, etag, auth, signal, raw, headers})
 * Returns the parsed body, or {status, data, headers} when raw is true.
 */
export async function request(path, opts = {}) {
  const method = opts.method || (opts.body !== undefined ? 'POST' : 'GET');
  const headers = new Headers({ Accept: 'application/json, application/problem+json' });
  if (opts.body !== undefined) headers.set('Content-Type', 'application/json');
  const token = opts.auth !== false ? await freshToken() : null;
  if (token) headers.set('Authorization', `Bearer ${token}`);
  if (opts.idempotencyKey) headers.set('Idempotency-Key', opts.idempotencyKey);
  if (opts.etag) headers.set('If-None-Match', opts.etag);
  if (opts.proofOfWork) headers.set('Proof-Of-Work', opts.proofOfWork);
  for (const [name, value] of Object.entries(opts.headers || {})) if (value) headers.set(name, value);
  if (navigator.onLine === false && !opts.tryOffline) throw new OfflineError();
  let res;
  try {
    res = await fetch(path.startsWith('/') && !path.startsWith(API) ? API + path : path, {
      method,
      headers,
      body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
      signal: opts.signal,
      cache: opts.cache,
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new OfflineError(err);
  }
  learnClock(res);
  if (res.status === 304) return opts.raw ? { status: 304, data: null, headers: res.headers } : null;
  const type = res.headers.get('Content-Type') || '';
  let data = null;
  if (res.status !== 204) data = type.includes('json') ? await res.json().catch(() => null) : await res.text();
  if (!res.ok) {
    if (res.status === 401 && token && opts.auth !== false) {
      // Revoked or expired early: renew once with the refresh token, then ask again.
      if (!opts.retried && canRefresh() && (await refreshSession())) return request(path, { ...opts, retried: true });
      setToken(null);
      window.dispatchEvent(new CustomEvent('tb:unauthorized'));
    }
    throw new ApiError(res.status, data && typeof data === 'object' ? data : { detail: data }, res.headers.get('Retry-After'));
  }
  return opts.raw ? { status: res.status, data, headers: res.headers } : data;
}

// ---- waiting rooms: the admission token of a queued on-sale, kept per event ----
/** Keep the admission token (and when it ends) the queue page got for an event. */
export function rememberAdmission(eventId, token, expiresAt) {
  localStorage.setItem(`tb.admission.${eventId}`, JSON.stringify({ token, expiresAt }));
}
/** The event's admission token while it is valid, else undefined (the field is left out). */
export function admissionFor(eventId) {
  const saved = JSON.parse(localStorage.getItem(`tb.admission.${eventId}`) || 'null');
  return saved && saved.expiresAt > serverNow() ? saved.token : undefined;
}
// "h<event>.<partition>.<random>" -> the event id
const holdEvent = (holdId) => Number(String(holdId).slice(1).split('.')[0]);

// ---- typed calls (shapes adapted in one place: model.js) ----
export const api = {
  categories: () => request('/categories', { auth: false }),
  events: (params = {}) => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
    const qs = q.toString();
    return request(`/events${qs ? `?${qs}` : ''}`, { auth: false, tryOffline: true });
  },
  event: (id) => request(`/events/${id}`, { auth: false, tryOffline: true }),
  seats: (id, etag) => request(`/events/${id}/seats`, { auth: false, etag, raw: true }),
  holdSeats: (id, seats) => request(`/events/${id}/holds`, { body: { seats, admission: admissionFor(id) }, raw: true }),
  holdBest: (id, quantity, category) => request(`/events/${id}/holds`, { body: { quantity, category, admission: admissionFor(id) }, raw: true }),
  hold: (holdId) => request(`/holds/${encodeURIComponent(holdId)}`),
  extendHold: (holdId) => request(`/holds/${encodeURIComponent(holdId)}/extend`, { method: 'POST' }),
  releaseHold: (holdId) => request(`/holds/${encodeURIComponent(holdId)}`, { method: 'DELETE' }),
  placeOrder: (holdId, key) => request('/orders', { body: { hold_id: holdId, admission: admissionFor(holdEvent(holdId)) }, idempotencyKey: key, raw: true }),
  // Paying for a hold (payments required): the admission token goes as X-Admission here.
  startPayment: (holdId, key) => request('/payments', { body: { hold_id: holdId }, idempotencyKey: key, headers: { 'X-Admission': admissionFor(holdEvent(holdId)) }, raw: true }),
  payment: (paymentId) => request(`/payments/${encodeURIComponent(paymentId)}`),
  cancelOrder: (orderId) => request(`/orders/${encodeURIComponent(orderId)}/cancel`, { method: 'POST' }),
  refunds: (orderId) => request(`/orders/${encodeURIComponent(orderId)}/refunds`),
  queue: (id) => request(`/events/${id}/queue`, { auth: false }),
  joinQueue: (id, proofOfWork) => request(`/events/${id}/queue`, { method: 'POST', proofOfWork }),
  queuePosition: (id) => request(`/events/${id}/queue/position`),
  order: (orderId) => request(`/orders/${encodeURIComponent(orderId)}`),
  myOrders: () => request('/me/orders'),
  myTickets: () => request('/me/tickets'),
  contact: () => request('/me/contact'),
  saveContact: (email, lang) => request('/me/contact', { method: 'PUT', body: { email, lang } }),
  checkin: (token, session, scannedAt) =>
    request('/checkins', { body: { token, event_id: session.event_id, gate: session.gate, ...(scannedAt ? { scanned_at: scannedAt } : {}) } }),
  reportScans: (eventId, scans) => request(`/events/${eventId}/scans`, { body: scans }),
  gateCounts: (eventId) => request(`/events/${eventId}/gates`),
  gateSnapshot: (eventId, since) => request(`/events/${eventId}/gate${since ? `?since=${since}` : ''}`),
};
