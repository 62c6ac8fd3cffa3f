// Spanish by default for es-* browsers, English otherwise; switchable and remembered.
import es from '../i18n/es.js';
import en from '../i18n/en.js';

const DICTS = { es, en };
const STORE_KEY = 'tb.lang';
// Seed venues are in Lima: dates and times are shown in the venue's zone.
export const VENUE_TZ = 'America/Lima';

function detect() {
  const saved = localStorage.getItem(STORE_KEY);
  if (saved && DICTS[saved]) return saved;
  const langs = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || 'en'];
  return String(langs[0] || 'en').toLowerCase().startsWith('es') ? 'es' : 'en';
}

let lang = detect();

export function getLang() {
  return lang;
}

export function locale() {
  return lang === 'es' ? 'es-PE' : 'en-GB';
}

export function setLang(next) {
  if (!DICTS[next] || next === lang) return;
  lang = next;
  localStorage.setItem(STORE_KEY, next);
  applyStatic();
  window.dispatchEvent(new CustomEvent('tb:lang', { detail: next }));
}

/** Translate key; values may be functions of vars (plurals, interpolation). */
export function t(key, vars = {}) {
  const entry = DICTS[lang][key] ?? DICTS.en[key];
  if (entry === undefined) return key;
  return typeof entry === 'function' ? entry(vars) : entry;
}

/** Fill elements marked with data-i18n / data-i18n-aria in the static shell. */
export function applyStatic(root = document) {
  document.documentElement.lang = lang;
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-aria]')) el.setAttribute('aria-label', t(el.dataset.i18nAria));
}

const moneyFormats = new Map();
/** Integer minor units -> "S/ 199.99" (Peruvian soles are written so in both languages). */
export function money(minor, currency = 'PEN') {
  const key = `${lang}|${currency}`;
  if (!moneyFormats.has(key)) {
    const loc = currency === 'PEN' ? 'es-PE' : locale();
    moneyFormats.set(key, new Intl.NumberFormat(loc, { style: 'currency', currency, minimumFractionDigits: 2 }));
  }
  return moneyFormats.get(key).format((Number(minor) || 0) / 100);
}

export function number(n) {
  return new Intl.NumberFormat(locale()).format(n);
}

function toDate(value) {
  if (value instanceof Date) return value;
  if (typeof value === 'number') return new Date(value < 1e12 ? value * 1000 : value); // s or ms
  if (/^\d+$/.test(String(value))) return toDate(Number(value));
  return new Date(String(value));
}

export function dateLong(value) {
  return new Intl.DateTimeFormat(locale(), {
    weekday: 'long', day: 'numeric', month: 'long', year: 'numeric', hour: '2-digit', minute: '2-digit', timeZone: VENUE_TZ,
  }).format(toDate(value));
}

export function dateShort(value) {
  return new Intl.DateTimeFormat(locale(), {
    weekday: 'short', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', timeZone: VENUE_TZ,
  }).format(toDate(value));
}

export function dayMonth(value) {
  const d = toDate(value);
  const day = new Intl.DateTimeFormat(locale(), { day: 'numeric', timeZone: VENUE_TZ }).format(d);
  const month = new Intl.DateTimeFormat(locale(), { month: 'short', timeZone: VENUE_TZ }).format(d).replace('.', '');
  return { day, month };
}

export function dateTime(value) {
  return new Intl.DateTimeFormat(locale(), { dateStyle: 'medium', timeStyle: 'medium', timeZone: VENUE_TZ }).format(toDate(value));
}

export function categoryName(code) {
  const key = `cat.${code}`;
  const out = t(key);
  return out === key ? String(code) : out;
}

/** A price category code as people write it: "PLATINUM" -> "Platinum", "VIP" stays. */
export function zoneName(code) {
  const text = String(code || '');
  return text.length <= 3 ? text : text.charAt(0) + text.slice(1).toLowerCase().replace(/_/g, ' ');
}
