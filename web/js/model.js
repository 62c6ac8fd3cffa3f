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

function naturalCompare(a, b) {
  return String(a).localeCompare(String(b), 'en', { numeric: true, sensitivity: 'base' });
}

/**
 * The seat map: parallel typed arrays so an 80,000-seat stadium stays cheap.
 * Accepts the compact forms the API may send:
 *  - {seats: [[id, cat, status], ...]} or {seats: [{id|seat_id, category, status}]}
 *  - {sections: [{section, category?, rows: [{row, seats: [number | {number, status}]}]}], statuses: {...}|string}
 *  - {ids: [...], categories: [...], statuses: "012.."|[...]} (column form)
 */
export class SeatMap {
  constructor(body, event) {
    this.version = pick(body, 'version', 'stream_id') ?? null;
    const flat = [];
    const catTable = pick(body, 'category_codes', 'category_names');
    const catOf = (c) => (typeof c === 'number' && Array.isArray(catTable) ? catTable[c] : c);
    const statusTable = pick(body, 'status_codes', 'status_names');
    const stOf = (s) => {
      if (typeof s === 'number') return Array.isArray(statusTable) ? statusCode(statusTable[s]) : s;
      if (typeof s === 'string' && s.length === 1 && /[0-3]/.test(s)) return Number(s);
      if (typeof s === 'string' && s.length === 1) return { F: 0, H: 1, P: 2, S: 3, f: 0, h: 1, p: 2, s: 3 }[s] ?? 3;
      return statusCode(s ?? 'free');
    };
    const statusMap = pick(body, 'statuses', 'status', 'live');
    const statusFor = (id, i, own) => {
      if (own !== undefined) return stOf(own);
      if (statusMap && typeof statusMap === 'object' && !Array.isArray(statusMap)) return statusMap[id] !== undefined ? stOf(statusMap[id]) : 0;
      if (typeof statusMap === 'string' || Array.isArray(statusMap)) return stOf(statusMap[i]);
      return 0;
    };
    const seats = pick(body, 'seats', 'items');
    const ids = pick(body, 'ids', 'seat_ids');
    if (Array.isArray(ids)) {
      const cats = pick(body, 'categories', 'seat_categories') || [];
      ids.forEach((id, i) => flat.push([id, catOf(Array.isArray(cats) ? cats[i] : undefined), statusFor(id, i)]));
    } else if (Array.isArray(seats)) {
      seats.forEach((s, i) => {
        if (Array.isArray(s)) flat.push([s[0], catOf(s[1]), statusFor(s[0], i, s[2])]);
        else {
          const id = pick(s, 'seat_id', 'id');
          flat.push([id, catOf(pick(s, 'category', 'cat', 'c')), statusFor(id, i, pick(s, 'status', 'st', 's'))]);
        }
      });
    } else {
      // The API's form (core/events.py SeatMap): sections of row runs; a run is
      // {row, first, category, status} with one status character per seat.
      const legend = pick(body, 'legend') || {};
      this.sectionNames = new Map();
      for (const sec of pick(body, 'sections') || []) {
        const code = String(pick(sec, 'code', 'section', 'id'));
        this.sectionNames.set(code, String(pick(sec, 'name') ?? code));
        for (const run of pick(sec, 'rows') || []) {
          const row = String(pick(run, 'row', 'label'));
          const first = Number(pick(run, 'first') ?? 1);
          const cat = catOf(pick(run, 'category'));
          const chars = String(pick(run, 'status') || '');
          for (let k = 0; k < chars.length; k += 1) {
            const ch = chars[k];
            flat.push([`${code}-${row}-${first + k}`, cat, legend[ch] ? statusCode(legend[ch]) : stOf(ch)]);
          }
        }
      }
    }
    this._build(flat, body, event);
  }

  _build(flat, body, event) {
    const n = flat.length;
    this.count = n;
    this.ids = new Array(n);
    this.index = new Map();
    this.status = new Uint8Array(n);
    this.cat = new Uint8Array(n);
    this.number = new Int32Array(n);
    this.sectionOf = new Int32Array(n);
    this.rowLabel = new Array(n);
    // Categories: prices from the event (or from the seats body), ordered by price.
    const listed = pick(body, 'categories', 'prices');
    const bodyCats = Array.isArray(listed) && listed.length && typeof listed[0] === 'object' ? listed : null;
    const prices = new Map();
    for (const p of event?.prices || []) prices.set(p.code, p);
    for (const p of bodyCats || []) {
      const code = String(pick(p, 'category', 'code', 'name'));
      if (!prices.has(code)) prices.set(code, { code, name: code, price: priceMinor(pick(p, 'price', 'price_minor', 'amount')), currency: pick(p, 'currency') || event?.currency || 'PEN' });
    }
    const seen = new Set(flat.map((f) => String(f[1] ?? 'GENERAL')));
    for (const code of seen) if (!prices.has(code)) prices.set(code, { code, name: code, price: undefined, currency: event?.currency || 'PEN' });
    this.categories = [...prices.values()].filter((p) => seen.has(p.code)).sort((a, b) => (b.price ?? 0) - (a.price ?? 0));
    this.categories.forEach((c, i) => { c.color = c.color || PALETTE[i % PALETTE.length]; c.idx = i; });
    const catIdx = new Map(this.categories.map((c, i) => [c.code, i]));
    // Sections and rows.
    const secIdx = new Map();
    this.sections = [];
    for (let i = 0; i < n; i += 1) {
      const [id, cat, st] = flat[i];
      const p = parseSeatId(id);
      this.ids[i] = String(id);
      this.index.set(String(id), i);
      this.status[i] = st;
      this.cat[i] = catIdx.get(String(cat ?? 'GENERAL')) ?? 0;
      this.number[i] = p.number;
      this.rowLabel[i] = p.row;
      let s = secIdx.get(p.section);
      if (s === undefined) {
        s = this.sections.length;
        secIdx.set(p.section, s);
        this.sections.push({ name: p.section, label: this.sectionNames?.get(p.section) || p.section, index: s, seats: [], rowsByLabel: new Map(), free: 0, total: 0, catCount: new Map() });
      }
      const sec = this.sections[s];
      this.sectionOf[i] = s;
      sec.seats.push(i);
      sec.total += 1;
      if (st === 0) sec.free += 1;
      sec.catCount.set(this.cat[i], (sec.catCount.get(this.cat[i]) || 0) + 1);
      if (!sec.rowsByLabel.has(p.row)) sec.rowsByLabel.set(p.row, []);
      sec.rowsByLabel.get(p.row).push(i);
    }
    for (const sec of this.sections) {
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
      for (const i of sec.seats) { minN = Math.min(minN, this.number[i]); maxN = Math.max(maxN, this.number[i]); }
      sec.minNumber = minN;
      sec.width = maxN - minN + 1;
    }
    this.sections.sort((a, b) => a.cat - b.cat || naturalCompare(a.name, b.name));
    this.sections.forEach((sec, k) => {
      for (const i of sec.seats) this.sectionOf[i] = k;
      sec.index = k;
    });
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

/** An order -> {id, status, reason, tickets, eventId, seats, total, currency}. */
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
  };
}

/** Problem → the seats it names as taken. */
export function problemSeats(problem) {
  return pick(problem, 'seats', 'unavailable', 'taken') || problem?.extra?.seats || [];
}
