// Order status, live: pending -> confirmed (tickets ready) or rejected.
import { ApiError, OfflineError } from '../api.js';
import { h, mount } from '../dom.js';
import { money, t } from '../i18n.js';
import { askPermission, notificationPermission } from '../notify.js';
import { fetchOrder, savedOrder } from '../wallet.js';
import { orderStatusChanged } from '../app.js';

export function render(main, [orderId]) {
  let status = 'pending';
  let reason = null;
  let record = null;
  let pollTimer = null;
  let pollDelay = 700;
  let disposed = false;

  const pill = h('span', { class: 'pill pending', id: 'order-status', dataset: { status: 'pending' } }, t('order.pending'));
  const steps = h('ol', { class: 'steps', 'aria-label': t('order.title') });
  const detail = h('div', { class: 'stack' });
  const ask = h('div', { class: 'notice row', hidden: true },
    h('span', null, t('notif.permission')), h('span', { class: 'spacer' }),
    h('button', { type: 'button', class: 'btn btn-sm', onclick: async () => { await askPermission(); ask.hidden = true; } }, t('notif.allow')),
    h('button', { type: 'button', class: 'btn btn-ghost btn-sm', onclick: () => { ask.hidden = true; localStorage.setItem('tb.notif.asked', '1'); } }, t('notif.later')));

  mount(main, h('div', { class: 'hold-layout' },
    h('section', { class: 'card stack', 'aria-labelledby': 'order-title' },
      h('div', { class: 'row' }, h('h1', { id: 'order-title' }, t('order.title')), h('span', { class: 'spacer' }), pill),
      h('p', { class: 'muted small' }, `${t('order.id')} ${orderId}`),
      steps, ask, detail)));

  if (notificationPermission() === 'default' && !localStorage.getItem('tb.notif.asked')) ask.hidden = false;

  function renderStatus() {
    if (status !== 'pending') ask.hidden = true;
    pill.className = `pill ${status}`;
    pill.dataset.status = status;
    pill.textContent = t(`order.${status}`) || status;
    const list = [];
    if (record?.key && record.queued) list.push(['done', t('order.step.queued')]);
    list.push(['done', t('order.step.placed')]);
    if (status === 'pending') list.push(['active', t('order.step.confirming')]);
    else if (status === 'confirmed') list.push(['done', t('order.step.confirming')], ['done', t('order.step.confirmed')]);
    else list.push(['failed', t('order.step.rejected')]);
    mount(steps, list.map(([cls, text]) => h('li', { class: cls }, text)));
    const parts = [];
    if (record?.total !== undefined && record?.total !== null) parts.push(h('div', { class: 'total-row' }, h('span', null, t('hold.total')), h('span', null, money(record.total, record.currency))));
    if (record?.seats?.length) parts.push(h('p', { class: 'muted' }, record.seats.join(', ')));
    if (status === 'rejected' && reason) parts.push(h('div', { class: 'error-box' }, t('order.reason', { reason })));
    if (status === 'confirmed') parts.push(h('a', { class: 'btn btn-accent', href: '#/tickets', id: 'see-tickets' }, t('order.seeTickets')));
    mount(detail, parts);
  }

  async function poll() {
    if (disposed) return;
    try {
      const order = await fetchOrder(orderId);
      if (disposed) return;
      // What the API knows beats what this device remembered (or did not).
      record = {
        ...(record || {}),
        seats: order.seats.map((x) => (typeof x === 'object' ? x.seat_id : x)),
        total: order.total ?? record?.total,
        currency: order.currency || record?.currency,
      };
      if (order.status !== 'pending') await orderStatusChanged(orderId, order.status, order.reason);
      update(order.status, order.reason);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404 && status === 'pending') {
        // The persister may not have written it yet; keep waiting.
      } else if (!(err instanceof OfflineError) && !(err instanceof ApiError)) throw err;
    }
    if (status === 'pending' && !disposed) {
      pollDelay = Math.min(5000, pollDelay * 1.4);
      pollTimer = setTimeout(poll, pollDelay);
    }
  }

  function update(next, why) {
    status = next === 'confirmed' || next === 'rejected' ? next : 'pending';
    reason = why || reason;
    renderStatus();
  }

  function onStatus(ev) {
    if (ev.detail.orderId !== orderId) return;
    update(ev.detail.status, ev.detail.reason);
  }
  window.addEventListener('tb:order-status', onStatus);
  const onOnline = () => { clearTimeout(pollTimer); pollDelay = 700; poll(); };
  window.addEventListener('online', onOnline);

  savedOrder(orderId).then((saved) => {
    record = saved || null;
    if (record?.status) update(record.status, record.reason);
    else renderStatus();
    poll();
  });

  return () => {
    disposed = true;
    clearTimeout(pollTimer);
    window.removeEventListener('tb:order-status', onStatus);
    window.removeEventListener('online', onOnline);
  };
}
