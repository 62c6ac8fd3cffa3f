// The payment step: when the API says a hold must be paid for (402 payment_required),
// a payment is opened with an Idempotency-Key kept per hold attempt in localStorage,
// so a reload or a retry answers the same payment. A declined or expired payment
// ends its attempt: the next one gets a fresh key.
import { api } from './api.js';
import { newKey } from './dom.js';
import { normalizePayment } from './model.js';

const attemptKey = (holdId) => `tb.pay.${holdId}`;
const FINISHED = new Set(['declined', 'expired']);

function attempt(holdId) {
  return JSON.parse(localStorage.getItem(attemptKey(holdId)) || 'null');
}

/** The payment of the hold's current attempt, if one was opened on this device. */
export function paymentForHold(holdId) {
  return attempt(holdId)?.paymentId || null;
}

/** End the hold's current attempt: the next payment gets a new key. */
export function forgetAttempt(holdId) {
  localStorage.removeItem(attemptKey(holdId));
}

/** Open (or find again) the payment for a hold. Throws ApiError / OfflineError. */
export async function payForHold(holdId) {
  for (let tries = 0; tries < 2; tries += 1) {
    const saved = attempt(holdId);
    const key = saved?.key || newKey();
    if (!saved) localStorage.setItem(attemptKey(holdId), JSON.stringify({ key }));
    const payment = normalizePayment((await api.startPayment(holdId, key)).data);
    // The same key answers the same payment: one already declined is the last attempt's.
    if (FINISHED.has(payment.status)) {
      forgetAttempt(holdId);
      continue;
    }
    localStorage.setItem(attemptKey(holdId), JSON.stringify({ key, paymentId: payment.id }));
    return payment;
  }
  throw new Error('payment attempt ended');
}

/**
 * Where to send the buyer: the provider's checkout, told to link back to the payment
 * page when it is on this origin (the simulated provider is served by the API). null
 * when the provider offers no hosted checkout (Stripe needs Stripe.js, not in this app).
 */
export function checkoutHref(payment) {
  if (!payment.checkoutUrl) return null;
  const url = new URL(payment.checkoutUrl, location.origin);
  if (url.origin === location.origin) url.searchParams.set('return', `/#/payments/${encodeURIComponent(payment.id)}`);
  return url.href;
}

/**
 * Pay for the hold and go to the provider's checkout (same tab). false when the
 * provider has no checkout this app can open; throws what payForHold throws.
 */
export async function payAndGo(holdId) {
  const href = checkoutHref(await payForHold(holdId));
  if (!href) return false;
  location.assign(href);
  return true;
}
