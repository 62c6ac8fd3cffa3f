// Wire shapes -> the shapes the screens use. Every API shape assumption lives
// here, so a change in the API is a change in one file.

export const STATUS = { free: 0, held: 1, pending: 2, sold: 3 };
const STATUS_NAMES = ['free', 'held', 'pending', 'sold'];
// Colour per price rank (most expensive first); chosen to stay apart for
// common colour-vision deficiencies and to carry white text.
export const PALETTE = ['#6d28d9', '#c2185b', '#b84a00', '#00727c', '#2e7d32', '#1d4ed8', '#8d6e00', '#5d4037'];

export function statusCode(name) {
  return STATUS[String(name).toLowerCase()] ?? STATUS.sold;
}
export function statusName(code) {
  return STATUS_NAMES[code] || 'sold';
}

/** Split "101-C-14" into {section, row, number}. */
export function parseSeatId(id) {
  const parts = String(id).split('-');
  const number = Number(parts.pop());
  const row = parts.pop() ?? '';
  return { section: parts.join('-'), row, number };
}

function pick(obj, ...names) {
  for (const n of names) if (obj && obj[n] !== undefined && obj[n] !== null) return obj[n];
  return undefined;
}

function priceMinor(value) {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'object') return priceMinor(pick(value, 'amount', 'minor', 'price_minor', 'value'));
  return Number(value);
}

/** One event of the catalog. */
export function normalizeEvent(raw) {
  const id = Number(pick(raw, 'event_id', 'id'));
  const venueObj = typeof raw.venue === 'object' && raw.venue ? raw.venue : null;
  const currency = pick(raw, 'currency') || 'PEN';
  // Availability: {CAT: n} or [{category, available}]
  const availRaw = pick(raw, 'availability', 'available', 'seats_available');
  const avail = {};
  if (Array.isArray(availRaw)) {
    for (const a of availRaw) avail[pick(a, 'category', 'code', 'name')] = Number(pick(a, 'available', 'free', 'count', 'seats') ?? 0);
  } else if (availRaw && typeof availRaw === 'object') {
    for (const [k, v] of Object.entries(availRaw)) avail[k] = Number(typeof v === 'object' ? pick(v, 'available', 'free', 'count') : v);
  }
  const pricesRaw = pick(raw, 'prices', 'categories', 'price_categories', 'tiers') || [];
  let prices = (Array.isArray(pricesRaw) ? pricesRaw : Object.entries(pricesRaw).map(([k, v]) => ({ category: k, price: v })))
    .map((p) => ({
      code: String(pick(p, 'category', 'code', 'name')),
      name: String(pick(p, 'name', 'label', 'category', 'code')),
      price: priceMinor(pick(p, 'price', 'price_minor', 'amount', 'unit_price')),
      currency: pick(p, 'currency') || currency,
      free: avail[pick(p, 'category', 'code', 'name')] ?? (pick(p, 'available', 'free') !== undefined ? Number(pick(p, 'available', 'free')) : undefined),
      capacity: pick(p, 'capacity', 'total', 'seats'),
    }));
  if (!prices.length) prices = Object.keys(avail).map((code) => ({ code, name: code, price: undefined, currency, free: avail[code] }));
  prices.sort((a, b) => (b.price ?? 0) - (a.price ?? 0));
  prices.forEach((p, i) => { p.color = PALETTE[i % PALETTE.length]; });
  const totalFree = prices.some((p) => p.free !== undefined) ? prices.reduce((s, p) => s + (p.free || 0), 0) : pick(raw, 'seats_free', 'available_total');
  return {
    id,
    title: String(pick(raw, 'title', 'name') || ''),
    category: String(pick(raw, 'category', 'kind') || 'OTHER').toUpperCase(),
    venue: String(venueObj ? pick(venueObj, 'name') : pick(raw, 'venue', 'venue_name') || ''),
    address: String((venueObj ? pick(venueObj, 'address') : pick(raw, 'venue_address', 'address')) || ''),
    startsAt: pick(raw, 'starts_at', 'start', 'date'),
    status: pick(raw, 'status', 'state'),
    currency,
    basePrice: priceMinor(pick(raw, 'base_price', 'base_price_minor')),
    capacity: Number(pick(raw, 'capacity') || 0),
    prices,
    free: totalFree === undefined ? undefined : Number(totalFree),
    raw,
  };
}

export function normalizeEventPage(body) {
  const items = Array.isArray(body) ? body : pick(body, 'items', 'events', 'data', 'results') || [];
  return { items: items.map(normalizeEvent), cursor: Array.isArray(body) ? null : pick(body, 'next_cursor', 'cursor', 'next') || null };
}

export function normalizeCategories(body) {
  const items = Array.isArray(body) ? body : pick(body, 'items', 'categories', 'data') || [];
  return items.map((c) => (typeof c === 'string' ? { code: c } : { code: String(pick(c, 'code', 'category', 'name')), name: pick(c, 'name') }));
}

/** Price categories of a seat map, dearest first, each with its colour. */
function orderedCategories(body, event, sectionsIn) {
  const prices = new Map();
  for (const p of event?.prices || []) prices.set(p.code, { ...p });
  for (const p of pick(body, 'categories') || []) {
    const code = String(pick(p, 'code', 'category'));
    if (!prices.has(code)) {
      prices.set(code, { code, name: String(pick(p, 'name') ?? code), price: priceMinor(pick(p, 'price_minor', 'price')), currency: pick(p, 'currency') || event?.currency || 'PEN' });
    }
  }
  const used = new Set();
  for (const sec of sectionsIn) for (const run of sec.rows || []) used.add(String(run.category));
  for (const code of used) if (!prices.has(code)) prices.set(code, { code, name: code, price: undefined, currency: event?.currency || 'PEN' });
  const list = [...prices.values()].filter((p) => used.has(p.code)).sort((a, b) => (b.price ?? 0) - (a.price ?? 0));
  list.forEach((c, k) => { c.color = PALETTE[k % PALETTE.length]; c.idx = k; });
  return list;
}

function naturalCompare(a, b) {
  return String(a).localeCompare(String(b), 'en', { numeric: true, sensitivity: 'base' });
}

/**
 * The seat map: parallel typed arrays so an 80,000-seat stadium stays cheap.
 * From the API's compact form (core/events.py SeatMap): sections of row runs,
 * a run being {row, first, category, status} with one status letter per seat
 * (`legend` maps letters to statuses). Seat ids are "<section>-<row>-<number>".
 */
export class SeatMap {
  constructor(body, event) {
    this.version = pick(body, 'version') ?? null;
    const legend = pick(body, 'legend') || {};
    const letter = {};
    for (const [ch, name] of Object.entries(legend)) letter[ch] = statusCode(name);
    for (const [ch, code] of Object.entries({ f: 0, h: 1, p: 2, s: 3 })) if (letter[ch] === undefined) letter[ch] = code;
    const sectionsIn = pick(body, 'sections') || [];
    let n = 0;
    for (const sec of sectionsIn) for (const run of sec.rows || []) n += String(run.status || '').length;
    this.count = n;
    this._ids = null; // built on first use (see get ids / get index)
    this._index = null;
    this.status = new Uint8Array(n);
    this.cat = new Uint8Array(n);
    this.number = new Int32Array(n);
    this.sectionOf = new Int32Array(n);
    this.rowLabel = new Array(n);
    this.categories = orderedCategories(body, event, sectionsIn);
    const catIdx = new Map(this.categories.map((c, k) => [c.code, k]));
    const sections = [];
    const byCode = new Map();
    let i = 0;
    for (const secIn of sectionsIn) {
      const code = String(pick(secIn, 'code', 'section'));
      let sec = byCode.get(code);
      if (!sec) {
        sec = { name: code, label: String(pick(secIn, 'name') ?? code), seats: [], rowsByLabel: new Map(), free: 0, total: 0, catCount: new Map() };
        byCode.set(code, sec);
        sections.push(sec);
      }
      for (const run of secIn.rows || []) {
        const row = String(run.row);
        const first = Number(run.first ?? 1);
        const c = catIdx.get(String(run.category)) ?? 0;
        const chars = String(run.status || '');
        if (!sec.rowsByLabel.has(row)) sec.rowsByLabel.set(row, []);
        const rowSeats = sec.rowsByLabel.get(row);
        let free = 0;
        for (let k = 0; k < chars.length; k += 1, i += 1) {
          const st = letter[chars[k]] ?? 3;
          this.status[i] = st;
          this.cat[i] = c;
          this.number[i] = first + k;
          this.rowLabel[i] = row;
          sec.seats.push(i);
          rowSeats.push(i);
          if (st === 0) free += 1;
        }
        sec.free += free;
        sec.total += chars.length;
        sec.catCount.set(c, (sec.catCount.get(c) || 0) + chars.length);
      }
    }
    for (const sec of sections) {
      sec.rows = [...sec.rowsByLabel.entries()]
        .sort((a, b) => naturalCompare(a[0], b[0]))
        .map(([label, seats]) => ({ label, seats: seats.sort((a, b) => this.number[a] - this.number[b]) }));
      delete sec.rowsByLabel;
      let best = 0;
      let bestN = -1;
      for (const [c, k] of sec.catCount) if (k > bestN) { best = c; bestN = k; }
      sec.cat = best;
      let minN = Infinity;
      let maxN = -Infinity;
      for (const k of sec.seats) { minN = Math.min(minN, this.number[k]); maxN = Math.max(maxN, this.number[k]); }
      sec.minNumber = sec.seats.length ? minN : 1;
      sec.width = sec.seats.length ? maxN - minN + 1 : 0;
    }
    // Dearest zone first, then sections in natural order.
    sections.sort((a, b) => a.cat - b.cat || naturalCompare(a.name, b.name));
    sections.forEach((sec, k) => {
      sec.index = k;
      for (const s of sec.seats) this.sectionOf[s] = k;
    });
    this.sections = sections;
  }

  /** Seat ids by index, made on first use: the overview needs none of them. */
  get ids() {
    if (!this._ids) {
      const ids = new Array(this.count);
      for (let i = 0; i < this.count; i += 1) ids[i] = `${this.sections[this.sectionOf[i]].name}-${this.rowLabel[i]}-${this.number[i]}`;
      this._ids = ids;
    }
    return this._ids;
  }

  /** Seat id -> index, made on first use (the first live delta or pick). */
  get index() {
    if (!this._index) {
      const ids = this.ids;
      const index = new Map();
      for (let i = 0; i < this.count; i += 1) index.set(ids[i], i);
      this._index = index;
    }
    return this._index;
  }

  category(i) {
    return this.categories[this.cat[i]];
  }

  freeByCategory() {
    const out = new Array(this.categories.length).fill(0);
    for (let i = 0; i < this.count; i += 1) if (this.status[i] === 0) out[this.cat[i]] += 1;
    return out;
  }

  /** Apply one delta; returns the set of touched section indexes. */
  apply(seatIds, status) {
    const code = typeof status === 'number' ? status : statusCode(status);
    const touched = new Set();
    for (const id of seatIds) {
      const i = this.index.get(String(id));
      if (i === undefined) continue;
      const before = this.status[i];
      if (before === code) continue;
      const sec = this.sections[this.sectionOf[i]];
      if (before === 0) sec.free -= 1;
      if (code === 0) sec.free += 1;
      this.status[i] = code;
      touched.add(sec.index);
    }
    return touched;
  }
}

/** A hold from the API -> {id, eventId, seats, expiresAt (ms), total, currency}. */
export function normalizeHold(raw) {
  const seats = (pick(raw, 'seats') || []).map((s) => (typeof s === 'object' ? { id: String(pick(s, 'seat_id', 'id')), category: pick(s, 'category'), price: priceMinor(pick(s, 'price', 'price_minor')) } : { id: String(s) }));
  const cats = pick(raw, 'categories', 'seat_categories');
  if (cats) seats.forEach((s, i) => { s.category = s.category ?? (Array.isArray(cats) ? cats[i] : cats[s.id]); });
  const prices = pick(raw, 'prices', 'seat_prices');
  if (prices) seats.forEach((s, i) => { s.price = s.price ?? priceMinor(Array.isArray(prices) ? prices[i] : prices[s.id]); });
  const hid = String(pick(raw, 'hold_id', 'id'));
  const eventFromId = /^h(\d+)\./.exec(hid);
  let expires = pick(raw, 'expires_at', 'expires_at_ms');
  if (typeof expires === 'string') expires = /^\d+$/.test(expires) ? Number(expires) : Date.parse(expires);
  else if (typeof expires === 'number' && expires < 1e12) expires *= 1000;
  return {
    id: hid,
    eventId: Number(pick(raw, 'event_id') ?? (eventFromId ? eventFromId[1] : 0)),
    seats,
    expiresAt: expires,
    maxExpiresAt: Number(pick(raw, 'max_expires_at')) || undefined,
    total: priceMinor(pick(raw, 'total', 'total_price', 'total_minor', 'amount')),
    currency: pick(raw, 'currency') || raw?.total?.currency || 'PEN',
  };
}

/** A payment -> {id, status, holdId, eventId, amount, currency, checkoutUrl, orderId, reason}. */
export function normalizePayment(raw) {
  return {
    id: String(pick(raw, 'payment_id', 'id')),
    status: String(pick(raw, 'status') || 'pending').toLowerCase(),
    holdId: pick(raw, 'hold_id'),
    eventId: pick(raw, 'event_id'),
    amount: priceMinor(pick(raw, 'amount')),
    currency: pick(raw, 'currency') || 'PEN',
    provider: pick(raw, 'provider'),
    // The provider's hosted checkout; absent for a provider that needs its own script (Stripe).
    checkoutUrl: pick(raw, 'checkout_url'),
    orderId: pick(raw, 'order_id') ? String(pick(raw, 'order_id')) : null,
    reason: pick(raw, 'reason'),
  };
}

/** A refund -> {id, kind, status (requested | refunded | failed), amount, currency, ticketIds}. */
export function normalizeRefund(raw) {
  return {
    id: String(pick(raw, 'refund_id', 'id')),
    kind: String(pick(raw, 'kind') || ''),
    status: String(pick(raw, 'status') || 'requested').toLowerCase(),
    amount: priceMinor(pick(raw, 'amount')),
    currency: pick(raw, 'currency') || 'PEN',
    ticketIds: pick(raw, 'ticket_ids') || [],
    reason: pick(raw, 'reason'),
    createdAt: pick(raw, 'created_at'),
    refundedAt: pick(raw, 'refunded_at'),
  };
}

/** An order -> {id, status, reason, tickets, eventId, seats, total, currency, payment, refunded}. */
export function normalizeOrder(raw) {
  return {
    id: String(pick(raw, 'order_id', 'id')),
    status: String(pick(raw, 'status', 'state') || 'pending').toLowerCase(),
    reason: pick(raw, 'reason', 'rejection_reason', 'detail'),
    tickets: (pick(raw, 'tickets') || []).map(normalizeTicket),
    eventId: pick(raw, 'event_id'),
    seats: pick(raw, 'seats') || [],
    total: priceMinor(pick(raw, 'total', 'total_price', 'total_minor', 'amount')),
    currency: pick(raw, 'currency') || 'PEN',
    createdAt: pick(raw, 'created_at', 'placed_at'),
    // The payment that placed it (null when bought without the payment step).
    payment: raw?.payment ? { id: String(pick(raw.payment, 'payment_id', 'id')), status: String(pick(raw.payment, 'status') || ''), amount: priceMinor(pick(raw.payment, 'amount')), currency: pick(raw.payment, 'currency') || 'PEN', provider: pick(raw.payment, 'provider') } : null,
    refunded: priceMinor(pick(raw, 'refunded')) || 0,
  };
}

export function normalizeTicket(raw) {
  const seatId = String(pick(raw, 'seat_id', 'seat') || '');
  const p = parseSeatId(seatId);
  const qr = pick(raw, 'qr_svg');
  return {
    ticket_id: String(pick(raw, 'ticket_id', 'id')),
    order_id: pick(raw, 'order_id'),
    event_id: pick(raw, 'event_id'),
    event_title: pick(raw, 'event_title', 'title') || raw?.event?.title,
    venue: pick(raw, 'venue', 'venue_name') || raw?.event?.venue,
    starts_at: pick(raw, 'starts_at') || raw?.event?.starts_at,
    seat_id: seatId,
    section: p.section,
    row: p.row,
    number: p.number,
    category: pick(raw, 'category'),
    price: priceMinor(pick(raw, 'price', 'price_minor')),
    currency: pick(raw, 'currency') || 'PEN',
    issued: pick(raw, 'issued') ?? true,
    // The API gives a link to the QR (or, some day, the SVG itself).
    qr_url: typeof qr === 'string' && !qr.trim().startsWith('<') ? qr : undefined,
    qr_svg: typeof qr === 'string' && qr.trim().startsWith('<') ? qr : undefined,
    token: pick(raw, 'token', 'jwt', 'qr_token'),
    used_at: pick(raw, 'checked_in_at', 'used_at'),
    // A revoked ticket (refunded, or by support) is refused at the gate.
    revoked_at: pick(raw, 'revoked_at'),
    refunded_at: pick(raw, 'refunded_at'),
  };
}

/** Problem → the seats it names as taken. */
export function problemSeats(problem) {
  return pick(problem, 'seats', 'unavailable', 'taken') || problem?.extra?.seats || [];
}
