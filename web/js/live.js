// WebSocket channels: seat deltas of one event, and the buyer's own channel.
// Reconnects with backoff, never while the device is offline (a doomed
// connection attempt only logs errors), and resumes seat deltas with ?since.
import { getToken } from './auth.js';

function wsUrl(path) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}/api/v1${path}`;
}

class Channel {
  constructor(path, handlers, { defer = false } = {}) {
    this.path = path;
    this.handlers = handlers;
    this.ws = null;
    this.closed = false;
    this.attempt = 0;
    this.timer = null;
    this.onOnline = () => this.connect();
    window.addEventListener('online', this.onOnline);
    if (!defer) this.connect();
  }

  url() {
    return wsUrl(this.path);
  }

  connect() {
    if (this.closed || this.ws || navigator.onLine === false) return;
    clearTimeout(this.timer);
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.schedule();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.opened(ws);
      this.handlers.onStatus?.('open');
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (msg && msg.type === 'ping') {
        this.send({ type: 'pong', t: msg.t || 0 });
        return;
      }
      this.handlers.onMessage?.(msg);
    };
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      if (this.ws === ws) this.ws = null;
      this.handlers.onStatus?.('closed', ev.code);
      // Refusals (bad frame or query, no/bad token, unknown event): retrying
      // the same request cannot help. Everything else reconnects with backoff.
      if ([1008, 4400, 4401, 4403, 4404].includes(ev.code)) return;
      this.schedule();
    };
  }

  opened() {}

  schedule() {
    if (this.closed) return;
    const delay = Math.min(15000, 500 * 2 ** this.attempt) * (0.7 + Math.random() * 0.6);
    this.attempt += 1;
    this.timer = setTimeout(() => this.connect(), delay);
  }

  send(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(obj));
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    window.removeEventListener('online', this.onOnline);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
  }
}

/**
 * Seat deltas of one event. handlers.onDelta(seatIds, status, version),
 * handlers.onResync() when the server says the gap is too old.
 */
export class EventChannel extends Channel {
  constructor(eventId, since, handlers) {
    super(`/events/${eventId}/live`, {
      ...handlers,
      onMessage: (msg) => this.dispatch(msg),
    }, { defer: true });
    this.eventId = eventId;
    this.since = since;
    this.connect();
  }

  url() {
    return this.since ? `${wsUrl(this.path)}?since=${encodeURIComponent(this.since)}` : wsUrl(this.path);
  }

  /** ?since= value: the largest version seen per partition, comma-joined. */
  get since() {
    return this.versions.length ? this.versions.join(',') : null;
  }

  set since(value) {
    this.versions = value ? String(value).split(',') : [];
  }

  dispatch(frame) {
    switch (frame.type) {
      case 'hello':
        // Where the server stands; without a resume point we start from here.
        if (!this.versions.length && Array.isArray(frame.versions)) this.versions = [...frame.versions];
        this.handlers.onHello?.(frame);
        break;
      case 'deltas': {
        for (const change of frame.changes || []) this.handlers.onDelta?.(change.seats || [], change.status, change.version);
        if (frame.version) this.versions[frame.partition || 0] = frame.version;
        break;
      }
      case 'resync':
        // The gap cannot be replayed: refetch the map (its version becomes `since`).
        this.handlers.onResync?.(frame);
        break;
      default:
        break;
    }
  }
}

/**
 * The buyer's own channel: order status changes (`order` frames) and hold
 * warnings (`hold_expiring`). handlers.onMessage gets every other frame.
 */
export class UserChannel extends Channel {
  constructor(handlers) {
    super('/me/live', { ...handlers, onMessage: (msg) => this.dispatch(msg) }, { defer: true });
    this.version = null;
    this.userHandlers = handlers;
    this.watched = new Set();
    this.queues = new Set();
    this.connect();
  }

  url() {
    return this.version ? `${wsUrl(this.path)}?since=${encodeURIComponent(this.version)}` : wsUrl(this.path);
  }

  opened(ws) {
    // The token travels as the first frame, not in the URL (kept out of access logs).
    ws.send(JSON.stringify({ type: 'auth', token: getToken() }));
    for (const holdId of this.watched) ws.send(JSON.stringify({ type: 'watch_hold', hold_id: holdId }));
    for (const eventId of this.queues) ws.send(JSON.stringify({ type: 'watch_queue', event_id: eventId }));
  }

  /** Have the place in this event's waiting room pushed (after joining it). */
  watchQueue(eventId) {
    if (this.queues.has(eventId)) return; // watched (again after each reconnect)
    this.queues.add(eventId);
    this.send({ type: 'watch_queue', event_id: eventId });
  }

  /** Ask for a warning shortly before this hold expires. */
  watchHold(holdId) {
    this.watched.add(holdId);
    this.send({ type: 'watch_hold', hold_id: holdId });
  }

  dispatch(frame) {
    if (frame.version && (frame.type === 'hello' || frame.type === 'order')) {
      if (frame.type === 'order' || !this.version) this.version = frame.version;
    }
    if (frame.type === 'hold_gone') this.watched.delete(frame.hold_id);
    if (frame.type === 'queue' && frame.status === 'admitted') this.queues.delete(frame.event_id);
    this.userHandlers.onMessage?.(frame);
  }

  connect() {
    if (!getToken()) return;
    super.connect();
  }
}
