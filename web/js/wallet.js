// The buyer's tickets and orders, kept in IndexedDB so they show offline.
import { api, request } from './api.js';
import { currentUser, getToken } from './auth.js';
import { db } from './db.js';
import { normalizeTicket, normalizeOrder } from './model.js';

function emit(name, detail) {
  window.dispatchEvent(new CustomEvent(name, { detail }));
}

/** A ticket that no longer admits anyone (refunded, or revoked by support). */
export function ticketVoid(ticket) {
  return Boolean(ticket.revoked_at || ticket.refunded_at);
}

/** Tickets saved on this device for the signed-in user. */
export async function savedTickets() {
  const user = currentUser();
  if (!user) return [];
  const list = await db.allBy('tickets', 'owner', user.sub);
  return list.sort((a, b) => String(a.starts_at || '').localeCompare(String(b.starts_at || '')) || String(a.seat_id).localeCompare(String(b.seat_id), 'en', { numeric: true }));
}

async function fetchQr(ticketId, url) {
  const res = await fetch(url || `/api/v1/tickets/${encodeURIComponent(ticketId)}/qr.svg`, {
    headers: { Authorization: `Bearer ${getToken()}`, Accept: 'image/svg+xml' },
  });
  if (!res.ok) return null;
  const text = await res.text();
  return text.includes('<svg') ? text : null;
}

let syncing = null;
/** Refresh the saved tickets from the API (QR codes fetched once each). */
export function syncTickets() {
  if (syncing) return syncing;
  syncing = (async () => {
    const user = currentUser();
    if (!user || navigator.onLine === false) return savedTickets();
    const body = await api.myTickets();
    const items = (Array.isArray(body) ? body : body.items || body.tickets || []).map(normalizeTicket);
    const known = new Map((await savedTickets()).map((t) => [t.ticket_id, t]));
    const events = new Map();
    for (const t of items) {
      const old = known.get(t.ticket_id);
      t.owner = user.sub;
      if (t.revoked_at || t.refunded_at) {
        // Refunded or revoked: the gate refuses it, so no code is kept to show.
        t.qr_svg = undefined;
        t.token = undefined;
      } else if (t.issued) {
        // Fetched once per ticket and kept: the QR and the signed code work offline.
        t.qr_svg = t.qr_svg || old?.qr_svg || (await fetchQr(t.ticket_id, t.qr_url).catch(() => null));
        t.token = t.token || old?.token || (await request(`/tickets/${encodeURIComponent(t.ticket_id)}`).then((x) => x?.token).catch(() => null));
      }
      if ((!t.event_title || !t.starts_at) && t.event_id) {
        if (!events.has(t.event_id)) events.set(t.event_id, await request(`/events/${t.event_id}`, { auth: false }).catch(() => null));
        const ev = events.get(t.event_id);
        if (ev) {
          t.event_title = t.event_title || ev.title;
          t.venue = t.venue || ev.venue_name || (typeof ev.venue === 'object' ? ev.venue?.name : ev.venue);
          t.starts_at = t.starts_at || ev.starts_at;
          t.event_category = ev.category;
        }
      }
    }
    await db.putMany('tickets', items);
    emit('tb:tickets', { count: items.length });
    return savedTickets();
  })().finally(() => {
    syncing = null;
  });
  return syncing;
}

/** Orders this device placed (by id), newest first. */
export async function savedOrder(orderId) {
  return db.get('kv', `order:${orderId}`);
}

/** The order this device placed for a hold, if any (the outbox records it). */
export async function orderForHold(holdId) {
  const all = await db.all('kv');
  return all.find((v) => v && v.order_id && v.hold_id === holdId) || null;
}

export async function rememberOrder(order) {
  const prev = (await savedOrder(order.id)) || {};
  await db.put('kv', { ...prev, order_id: order.id, status: order.status, reason: order.reason }, `order:${order.id}`);
}

/** The order as the API has it now (app.orderStatusChanged records and announces changes). */
export async function fetchOrder(orderId) {
  return normalizeOrder(await api.order(orderId));
}
