// Seat map rendering: a section overview (buttons, one per section), and one
// section drawn on a canvas, so a stadium of 80,000 seats never puts 80,000
// nodes in the page. The canvas is keyboard-operable: arrow keys move a
// cursor between seats, Enter/Space picks, and a live region reads the seat.
import { h, s } from './dom.js';
import { money, number, t } from './i18n.js';

const TAKEN = '#cdc9d8';
const TAKEN_MARK = '#9e99ad';
const LABEL_W = 30;
const PAD = 10;

/** Section tiles grouped by category. Returns {el, update()}. */
export function sectionOverview(model, { onOpen, selectedSections }) {
  const tiles = new Map();
  const grid = h('div', { class: 'sections', role: 'list' });
  let lastCat = -1;
  for (const sec of model.sections) {
    if (sec.cat !== lastCat) {
      lastCat = sec.cat;
      const c = model.categories[sec.cat];
      grid.append(h('div', { class: 'section-group-label', role: 'presentation' }, h('i', { style: { background: c.color } }), c.name,
        c.price !== undefined ? h('span', { class: 'muted' }, `· ${money(c.price, c.currency)}`) : null));
    }
    const c = model.categories[sec.cat];
    const count = h('span', { class: 'sa' });
    const fill = h('i', { style: { background: c.color } });
    const dot = h('span', { class: 'has-sel', hidden: true, 'aria-hidden': 'true' });
    const tile = h('button', {
      type: 'button', class: 'section-tile', role: 'listitem', dataset: { section: sec.name },
      onclick: () => onOpen(sec.index),
    }, h('span', { class: 'sn' }, sec.name), count, h('span', { class: 'sbar', 'aria-hidden': 'true' }, fill), dot);
    grid.append(tile);
    tiles.set(sec.index, { tile, count, fill, dot, sec, c });
  }
  function update(only) {
    const sel = selectedSections();
    for (const [k, x] of tiles) {
      if (only && !only.has(k)) continue;
      const { sec, c } = x;
      x.count.textContent = t('event.available', { n: number(sec.free) });
      x.fill.style.width = `${sec.total ? Math.max(sec.free ? 4 : 0, (100 * sec.free) / sec.total) : 0}%`;
      x.tile.dataset.full = String(sec.free === 0);
      x.tile.setAttribute('aria-label', t('event.sectionLabel', { s: sec.label || sec.name, cat: c.name, n: number(sec.free) }));
      x.dot.hidden = !sel.has(k);
    }
  }
  update();
  return { el: grid, update };
}

/** One section on a canvas. */
export class SectionCanvas {
  constructor(model, sectionIndex, { isSelected, onToggle, cell = 24 }) {
    this.model = model;
    this.sec = model.sections[sectionIndex];
    this.isSelected = isSelected;
    this.onToggle = onToggle;
    this.cell = cell;
    this.cursor = { r: 0, k: 0 };
    this.canvas = h('canvas', { 'aria-hidden': 'true' });
    this.tooltip = h('div', { class: 'seat-tooltip', hidden: true, 'aria-hidden': 'true' });
    this.live = h('div', { class: 'visually-hidden', 'aria-live': 'polite', 'aria-atomic': 'true' });
    this.wrap = h('div', {
      class: 'seat-canvas-wrap', tabindex: '0', role: 'application', 'aria-roledescription': 'seat map',
      'aria-label': t('event.mapLabel', { s: this.sec.name }), 'aria-describedby': 'seat-live',
    }, this.canvas, this.tooltip);
    this.live.id = 'seat-live';
    this.el = h('div', null, this.wrap, this.live);
    this.focused = false;
    this.placeCursorOnFirstFree();
    this.bind();
    this.layout();
  }

  placeCursorOnFirstFree() {
    const rows = this.sec.rows;
    for (let r = 0; r < rows.length; r += 1) {
      const k = rows[r].seats.findIndex((i) => this.model.status[i] === 0);
      if (k >= 0) {
        this.cursor = { r, k };
        return;
      }
    }
    this.cursor = { r: 0, k: 0 };
  }

  seatAtCursor() {
    const row = this.sec.rows[this.cursor.r];
    return row ? row.seats[this.cursor.k] : undefined;
  }

  pos(i) {
    const r = this.rowOf.get(i);
    const x = LABEL_W + PAD + (this.model.number[i] - this.sec.minNumber) * this.cell;
    const y = PAD + r * this.cell;
    return { x, y };
  }

  layout() {
    this.rowOf = new Map();
    this.sec.rows.forEach((row, r) => row.seats.forEach((i) => this.rowOf.set(i, r)));
    const w = LABEL_W + PAD * 2 + this.sec.width * this.cell;
    const hgt = PAD * 2 + this.sec.rows.length * this.cell;
    const dpr = Math.min(window.devicePixelRatio || 1, 2);
    this.canvas.width = Math.ceil(w * dpr);
    this.canvas.height = Math.ceil(hgt * dpr);
    this.canvas.style.width = `${w}px`;
    this.canvas.style.height = `${hgt}px`;
    this.dpr = dpr;
    this.draw();
  }

  setCell(cell) {
    this.cell = Math.max(12, Math.min(40, cell));
    this.layout();
    this.scrollToCursor();
  }

  draw() {
    const ctx = this.canvas.getContext('2d');
    const { model, sec, cell } = this;
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    const size = cell - Math.max(3, cell * 0.18);
    const radius = Math.max(2, size * 0.28);
    ctx.font = `600 ${Math.max(9, Math.min(12, cell * 0.45))}px system-ui, sans-serif`;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    sec.rows.forEach((row, r) => {
      ctx.fillStyle = '#6b6680';
      ctx.fillText(row.label, LABEL_W / 2 + 2, PAD + r * cell + size / 2);
    });
    const cursorSeat = this.seatAtCursor();
    for (const i of sec.seats) {
      const { x, y } = this.pos(i);
      const st = model.status[i];
      const selected = this.isSelected(i);
      ctx.beginPath();
      ctx.roundRect(x, y, size, size, [radius, radius, radius * 0.6, radius * 0.6]);
      if (selected) {
        ctx.fillStyle = '#1c1830';
        ctx.fill();
        ctx.strokeStyle = '#fff';
        ctx.lineWidth = Math.max(1.5, size * 0.1);
        ctx.beginPath();
        ctx.moveTo(x + size * 0.27, y + size * 0.52);
        ctx.lineTo(x + size * 0.44, y + size * 0.7);
        ctx.lineTo(x + size * 0.74, y + size * 0.32);
        ctx.stroke();
      } else if (st === 0) {
        ctx.fillStyle = model.categories[model.cat[i]].color;
        ctx.fill();
      } else {
        ctx.fillStyle = TAKEN;
        ctx.fill();
        if (size >= 12) {
          ctx.strokeStyle = TAKEN_MARK;
          ctx.lineWidth = 1.5;
          ctx.beginPath();
          ctx.moveTo(x + size * 0.3, y + size * 0.3);
          ctx.lineTo(x + size * 0.7, y + size * 0.7);
          ctx.moveTo(x + size * 0.7, y + size * 0.3);
          ctx.lineTo(x + size * 0.3, y + size * 0.7);
          ctx.stroke();
        }
      }
      if (this.focused && i === cursorSeat) {
        ctx.strokeStyle = '#e23d6d';
        ctx.lineWidth = 3;
        ctx.beginPath();
        ctx.roundRect(x - 3, y - 3, size + 6, size + 6, radius + 2);
        ctx.stroke();
      }
    }
  }

  /** Redraw after live changes; keep the spoken label of the cursor current. */
  refresh() {
    this.draw();
    this.describe(false);
  }

  seatLabel(i) {
    const c = this.model.category(i);
    const status = this.isSelected(i) ? t('event.selected') : this.model.status[i] === 0 ? t('event.free') : t('event.taken');
    return t('event.seatLabel', { row: this.model.rowLabel[i], num: this.model.number[i], cat: c.name, price: c.price !== undefined ? money(c.price, c.currency) : '', status });
  }

  describe(speak = true) {
    const i = this.seatAtCursor();
    if (i === undefined) return;
    this.wrap.dataset.seat = this.model.ids[i];
    this.wrap.dataset.status = this.isSelected(i) ? 'selected' : this.model.status[i] === 0 ? 'free' : 'taken';
    if (speak) this.live.textContent = this.seatLabel(i);
  }

  scrollToCursor() {
    const i = this.seatAtCursor();
    if (i === undefined) return;
    const { x, y } = this.pos(i);
    const w = this.wrap;
    const m = this.cell * 2;
    if (x - m < w.scrollLeft) w.scrollLeft = Math.max(0, x - m);
    else if (x + m > w.scrollLeft + w.clientWidth) w.scrollLeft = x + m - w.clientWidth;
    if (y - m < w.scrollTop) w.scrollTop = Math.max(0, y - m);
    else if (y + m > w.scrollTop + w.clientHeight) w.scrollTop = y + m - w.clientHeight;
  }

  moveCursor(dr, dk, abs) {
    const rows = this.sec.rows;
    let { r, k } = this.cursor;
    if (abs === 'home') k = 0;
    else if (abs === 'end') k = rows[r].seats.length - 1;
    else if (dr) {
      const from = this.seatAtCursor();
      const num = from === undefined ? 0 : this.model.number[from];
      r = Math.max(0, Math.min(rows.length - 1, r + dr));
      // Same seat number in the next row, or the nearest one.
      let best = 0;
      let bestD = Infinity;
      rows[r].seats.forEach((i, idx) => {
        const d = Math.abs(this.model.number[i] - num);
        if (d < bestD) { best = idx; bestD = d; }
      });
      k = best;
    } else k = Math.max(0, Math.min(rows[r].seats.length - 1, k + dk));
    this.cursor = { r, k };
    this.draw();
    this.describe();
    this.scrollToCursor();
  }

  toggle(i) {
    if (i === undefined) return;
    if (this.model.status[i] !== 0 && !this.isSelected(i)) {
      this.live.textContent = this.seatLabel(i);
      return;
    }
    this.onToggle(i);
    this.draw();
    this.describe();
  }

  hit(ev) {
    const rect = this.canvas.getBoundingClientRect();
    const x = ev.clientX - rect.left;
    const y = ev.clientY - rect.top;
    const r = Math.floor((y - PAD) / this.cell);
    const row = this.sec.rows[r];
    if (!row) return undefined;
    const num = Math.floor((x - LABEL_W - PAD) / this.cell) + this.sec.minNumber;
    const k = row.seats.findIndex((i) => this.model.number[i] === num);
    return k < 0 ? undefined : { r, k, i: row.seats[k] };
  }

  bind() {
    this.wrap.addEventListener('focus', () => {
      this.focused = true;
      this.draw();
      this.describe();
    });
    this.wrap.addEventListener('blur', () => {
      this.focused = false;
      this.draw();
    });
    this.wrap.addEventListener('keydown', (ev) => {
      const keys = {
        ArrowLeft: () => this.moveCursor(0, -1),
        ArrowRight: () => this.moveCursor(0, 1),
        ArrowUp: () => this.moveCursor(-1, 0),
        ArrowDown: () => this.moveCursor(1, 0),
        Home: () => this.moveCursor(0, 0, 'home'),
        End: () => this.moveCursor(0, 0, 'end'),
        Enter: () => this.toggle(this.seatAtCursor()),
        ' ': () => this.toggle(this.seatAtCursor()),
        '+': () => this.setCell(this.cell + 4),
        '-': () => this.setCell(this.cell - 4),
      };
      const fn = keys[ev.key];
      if (fn) {
        ev.preventDefault();
        fn();
      }
    });
    this.canvas.addEventListener('click', (ev) => {
      const hit = this.hit(ev);
      if (!hit) return;
      this.cursor = { r: hit.r, k: hit.k };
      this.toggle(hit.i);
    });
    this.canvas.addEventListener('pointermove', (ev) => {
      if (ev.pointerType !== 'mouse') return;
      const hit = this.hit(ev);
      if (!hit) {
        this.tooltip.hidden = true;
        this.canvas.style.cursor = 'default';
        return;
      }
      const { x, y } = this.pos(hit.i);
      this.tooltip.textContent = this.seatLabel(hit.i);
      this.tooltip.style.left = `${x + this.cell / 2}px`;
      this.tooltip.style.top = `${y}px`;
      this.tooltip.hidden = false;
      this.canvas.style.cursor = this.model.status[hit.i] === 0 || this.isSelected(hit.i) ? 'pointer' : 'not-allowed';
    });
    this.canvas.addEventListener('pointerleave', () => { this.tooltip.hidden = true; });
  }
}

/**
 * A drawing of the venue: sections as sectors of rings around the stage, the
 * dearest category nearest. A stadium (many sections) gets a full bowl around
 * the field; a theatre or club gets a fan in front of the stage. Each sector is
 * a button; arrow keys move between them (one tab stop for the whole map).
 */
export function venueMap(model, { onOpen, selectedSections }) {
  const sections = model.sections;
  const bowl = sections.length > 12;
  const W = 640;
  const H = bowl ? 470 : 360;
  const cx = W / 2;
  const cy = bowl ? H / 2 : 54;
  const rings = [];
  for (const sec of sections) {
    if (!rings[sec.cat]) rings[sec.cat] = [];
    rings[sec.cat].push(sec);
  }
  const ringList = rings.filter(Boolean);
  const inner = bowl ? 118 : 70;
  const outer = bowl ? 228 : 300;
  const band = (outer - inner) / ringList.length;
  const gap = bowl ? 0.012 : 0.02;
  const aspect = bowl ? 1.32 : 1.0; // stadiums are oval
  const point = (r, a) => [cx + r * aspect * Math.cos(a), cy + r * Math.sin(a)];
  const arc = (r, a0, a1, steps) => {
    const pts = [];
    for (let k = 0; k <= steps; k += 1) pts.push(point(r, a0 + ((a1 - a0) * k) / steps));
    return pts;
  };
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'venue-map', role: 'group', 'aria-label': t('event.sections') });
  if (bowl) {
    svg.append(
      s('ellipse', { cx, cy, rx: (inner - 12) * aspect, ry: inner - 12, fill: '#e7f3ea', stroke: '#b9dcc3', 'stroke-width': 2 }),
      s('rect', { x: cx - 70, y: cy - 26, width: 140, height: 52, rx: 10, fill: '#3b1a78' }),
      s('text', { x: cx, y: cy + 5, 'text-anchor': 'middle', class: 'venue-stage-label', 'font-size': 13 }, t('event.stage')),
    );
  } else {
    svg.append(
      s('rect', { x: cx - 150, y: 6, width: 300, height: 46, rx: 12, fill: '#3b1a78' }),
      s('text', { x: cx, y: 36, 'text-anchor': 'middle', class: 'venue-stage-label', 'font-size': 18 }, t('event.stage')),
    );
  }
  const nodes = new Map();
  const order = [];
  ringList.forEach((ring, ri) => {
    const r0 = inner + ri * band + 3;
    const r1 = inner + (ri + 1) * band - 3;
    const [start, span] = bowl ? [-Math.PI / 2, 2 * Math.PI] : [Math.PI * 0.1, Math.PI * 0.8];
    const step = span / ring.length;
    ring.forEach((sec, k) => {
      // Fans read left to right from the audience's view; bowls clockwise from the top.
      const slot = bowl ? k : ring.length - 1 - k; // fans: first section on the left
      const a0 = start + step * slot + gap;
      const a1 = start + step * (slot + 1) - gap;
      const steps = Math.max(2, Math.ceil((a1 - a0) / 0.08));
      const pts = [...arc(r1, a0, a1, steps), ...arc(r0, a1, a0, steps)];
      const d = `M${pts.map((p) => `${p[0].toFixed(1)},${p[1].toFixed(1)}`).join('L')}Z`;
      const c = model.categories[sec.cat];
      const path = s('path', { d, fill: c.color });
      const [tx, ty] = point((r0 + r1) / 2, (a0 + a1) / 2);
      const arcLen = ((r0 + r1) / 2) * (a1 - a0) * (bowl ? 1.15 : 1);
      const label = arcLen > 26 ? s('text', { x: tx.toFixed(1), y: (ty + 4).toFixed(1), 'text-anchor': 'middle', class: 'venue-sec-label', 'font-size': bowl ? 11 : 22 }, sec.name) : null;
      const title = s('title');
      const g = s('g', { class: 'venue-sec', role: 'button', tabindex: '-1', dataset: { section: sec.name } }, path, label, title);
      g.addEventListener('click', () => onOpen(sec.index));
      nodes.set(sec.index, { g, path, title, sec, c, ring: ri, pos: k });
      order.push(sec.index);
      svg.append(g);
    });
  });
  let current = order[0];
  const focusSection = (index) => {
    const prev = nodes.get(current);
    if (prev) prev.g.setAttribute('tabindex', '-1');
    current = index;
    const node = nodes.get(index);
    node.g.setAttribute('tabindex', '0');
    node.g.focus();
  };
  if (order.length) nodes.get(order[0]).g.setAttribute('tabindex', '0');
  svg.addEventListener('keydown', (ev) => {
    const node = nodes.get(current);
    if (!node) return;
    const ring = ringList[node.ring];
    let next = null;
    if (ev.key === 'Enter' || ev.key === ' ') {
      ev.preventDefault();
      onOpen(current);
      return;
    }
    if (ev.key === 'ArrowRight') next = ring[(node.pos + 1) % ring.length];
    else if (ev.key === 'ArrowLeft') next = ring[(node.pos - 1 + ring.length) % ring.length];
    else if (ev.key === 'ArrowUp' || ev.key === 'ArrowDown') {
      const other = ringList[node.ring + (ev.key === 'ArrowDown' ? 1 : -1)];
      if (other) next = other[Math.min(other.length - 1, Math.floor(((node.pos + 0.5) / ring.length) * other.length))];
    }
    if (next) {
      ev.preventDefault();
      focusSection(next.index);
    }
  });
  function update(only) {
    const sel = selectedSections();
    for (const [k, node] of nodes) {
      if (only && !only.has(k)) continue;
      const { sec, c } = node;
      const share = sec.total ? sec.free / sec.total : 0;
      node.path.setAttribute('fill', sec.free ? c.color : '#d6d3df');
      node.path.setAttribute('fill-opacity', sec.free ? String(0.45 + 0.55 * share) : '1');
      node.g.classList.toggle('has-sel', sel.has(k));
      const label = t('event.sectionLabel', { s: sec.label || sec.name, cat: c.name, n: number(sec.free) });
      node.g.setAttribute('aria-label', label);
      node.title.textContent = label;
    }
  }
  update();
  return { el: svg, update };
}
