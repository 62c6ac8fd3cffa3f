// My tickets: from IndexedDB first (works offline), then refreshed online.
import { currentUser } from '../auth.js';
import { h, mount, toast } from '../dom.js';
import { dateLong, money, t, zoneName } from '../i18n.js';
import { askPermission, notificationPermission } from '../notify.js';
import { savedTickets, syncTickets } from '../wallet.js';

function qrImage(ticket) {
  if (!ticket.qr_svg) return h('span', { class: 'muted small qr-pending' }, h('span', { class: 'spinner dark' }), h('br'), t('tickets.qrPending'));
  return h('img', {
    src: `data:image/svg+xml;charset=utf-8,${encodeURIComponent(ticket.qr_svg)}`,
    alt: t('tickets.qrAlt', { seat: ticket.seat_id }), width: 128, height: 128,
  });
}

function ticketCard(ticket) {
  const art = `art-${String(ticket.event_category || 'CONCERT').toUpperCase()}`;
  return h('article', { class: 'ticket', dataset: { ticketId: ticket.ticket_id, seat: ticket.seat_id } },
    h('div', { class: `ticket-top ${art}` },
      h('h3', null, ticket.event_title || `#${ticket.event_id}`),
      h('div', { class: 'small' }, [ticket.starts_at ? dateLong(ticket.starts_at) : null, ticket.venue].filter(Boolean).join(' · '))),
    h('div', { class: 'ticket-body' },
      h('div', { class: 'ticket-qr' }, qrImage(ticket)),
      h('dl', { class: 'ticket-facts' },
        h('dt', null, t('tickets.section')), h('dd', null, ticket.section),
        h('dt', null, t('tickets.row')), h('dd', null, ticket.row),
        h('dt', null, t('tickets.seat')), h('dd', null, String(ticket.number)),
        ticket.category ? [h('dt', null, t('event.zone')), h('dd', null, zoneName(ticket.category))] : null,
        ticket.price !== undefined && ticket.price !== null ? [h('dt', null, t('hold.total')), h('dd', null, money(ticket.price, ticket.currency))] : null,
        ticket.used_at ? [h('dt', null, t('tickets.used')), h('dd', null, dateLong(ticket.used_at))] : null)),
    h('div', { class: 'ticket-foot' },
      h('span', { class: 'ticket-id', title: ticket.ticket_id }, ticket.ticket_id),
      h('span', { class: 'spacer' }),
      ticket.token ? h('button', {
        type: 'button', class: 'btn btn-ghost btn-sm',
        onclick: async () => {
          try {
            await navigator.clipboard.writeText(ticket.token);
            toast(t('tickets.copied'), 'ok', 2000);
          } catch {
            prompt(t('tickets.copy'), ticket.token);
          }
        },
      }, t('tickets.copy')) : null));
}

export function render(main) {
  const list = h('div', { class: 'ticket-grid', id: 'ticket-list', 'aria-live': 'polite' });
  const note = h('p', { class: 'notice', hidden: true }, t('tickets.offline'));
  const notifBtn = h('button', { type: 'button', class: 'btn btn-ghost btn-sm', id: 'notify-btn' }, t('tickets.notify'));
  const notifState = h('span', { class: 'muted small' });

  function showNotifState() {
    const perm = notificationPermission();
    notifBtn.hidden = perm !== 'default';
    notifState.textContent = perm === 'granted' ? t('tickets.notifyOn') : perm === 'denied' ? t('tickets.notifyDenied') : '';
  }
  notifBtn.addEventListener('click', async () => {
    await askPermission();
    showNotifState();
  });

  if (!currentUser()) {
    mount(main, h('div', { class: 'empty card' }, h('p', null, t('tickets.loginFirst')), h('a', { class: 'btn', href: '#/login' }, t('nav.login'))));
    sessionStorage.setItem('tb.returnTo', '#/tickets');
    return undefined;
  }

  mount(main,
    h('div', { class: 'page-head' },
      h('div', null, h('h1', null, t('tickets.title')), h('p', null, t('tickets.subtitle'))),
      h('span', { class: 'spacer' }), notifState, notifBtn),
    note, list);
  showNotifState();

  function show(tickets) {
    if (!tickets.length) {
      mount(list, h('div', { class: 'empty card' },
        h('p', null, t('tickets.empty')), h('a', { class: 'btn', href: '#/' }, t('tickets.browse'))));
      return;
    }
    mount(list, tickets.map(ticketCard));
  }

  let disposed = false;
  let retries = 0;
  let retryTimer = null;
  function refresh(saved) {
    syncTickets()
      .then((fresh) => {
        if (disposed) return;
        show(fresh);
        // Tickets are signed by a worker shortly after the order confirms.
        if (fresh.some((x) => !x.qr_svg) && retries < 30) {
          retries += 1;
          retryTimer = setTimeout(() => refresh(fresh), 2000);
        }
      })
      .catch(() => {
        if (!disposed) {
          show(saved);
          note.hidden = false;
        }
      });
  }
  savedTickets().then((saved) => {
    if (disposed) return;
    if (saved.length || navigator.onLine === false) show(saved);
    note.hidden = navigator.onLine !== false;
    if (navigator.onLine !== false) refresh(saved);
  });
  const onTickets = () => savedTickets().then((x) => { if (!disposed) show(x); });
  window.addEventListener('tb:tickets', onTickets);
  return () => {
    disposed = true;
    clearTimeout(retryTimer);
    window.removeEventListener('tb:tickets', onTickets);
  };
}
