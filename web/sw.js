// TicketBuster service worker: the app shell works offline, the last catalog
// is served when the network is gone, and API calls that change things are
// never cached (the page's outbox replays those).
const VERSION = 'tb-shell-v3';
const DATA = 'tb-data-v1';
const SHELL = [
  '/',
  '/css/app.css',
  '/js/app.js',
  '/js/camera.js',
  '/js/checkout.js',
  '/js/api.js',
  '/js/auth.js',
  '/js/db.js',
  '/js/dom.js',
  '/js/gate.js',
  '/js/i18n.js',
  '/js/live.js',
  '/js/model.js',
  '/js/notify.js',
  '/js/outbox.js',
  '/js/seatmap.js',
  '/js/wallet.js',
  '/js/views/catalog.js',
  '/js/views/event.js',
  '/js/views/hold.js',
  '/js/views/login.js',
  '/js/views/order.js',
  '/js/views/organizer.js',
  '/js/views/payment.js',
  '/js/views/queue.js',
  '/js/views/scanner.js',
  '/js/views/tickets.js',
  '/i18n/es.js',
  '/i18n/en.js',
  '/manifest.webmanifest',
  '/icons/icon.svg',
  '/icons/icon-192.png',
  '/icons/icon-512.png',
  '/icons/maskable-512.png',
  '/favicon.ico',
];

self.addEventListener('install', (event) => {
  event.waitUntil(
    caches.open(VERSION).then((cache) => cache.addAll(SHELL.map((url) => new Request(url, { cache: 'no-cache' })))).then(() => self.skipWaiting()),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== VERSION && k !== DATA).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

// Public catalog reads: network first, the saved copy when offline.
function isCatalog(url) {
  return url.pathname === '/api/v1/events' || url.pathname === '/api/v1/categories' || /^\/api\/v1\/events\/\d+$/.test(url.pathname) || url.pathname === '/config.json';
}

async function networkFirst(request) {
  const cache = await caches.open(DATA);
  try {
    const response = await fetch(request);
    if (response.ok) cache.put(request, response.clone());
    return response;
  } catch (err) {
    const hit = await cache.match(request, { ignoreVary: true });
    if (hit) return hit;
    // Another filter of the catalog: the last unfiltered list beats nothing.
    const url = new URL(request.url);
    if (url.pathname === '/api/v1/events') {
      const keys = await cache.keys();
      const any = keys.find((k) => new URL(k.url).pathname === '/api/v1/events');
      if (any) return cache.match(any, { ignoreVary: true });
    }
    throw err;
  }
}

// Shell files: answer from the cache at once, refresh it in the background.
async function staleWhileRevalidate(request, event) {
  const cache = await caches.open(VERSION);
  const hit = await cache.match(request, { ignoreSearch: true, ignoreVary: true });
  const refresh = fetch(request).then((response) => {
    if (response.ok) cache.put(request, response.clone());
    return response;
  });
  if (hit) {
    event.waitUntil(refresh.catch(() => undefined));
    return hit;
  }
  return refresh;
}

self.addEventListener('fetch', (event) => {
  const { request } = event;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (url.pathname.startsWith('/api/')) {
    if (isCatalog(url) && !request.headers.has('Authorization')) event.respondWith(networkFirst(request));
    return; // private or live data: straight to the network
  }
  if (url.pathname === '/config.json') {
    event.respondWith(networkFirst(request));
    return;
  }
  if (request.mode === 'navigate') {
    // Network first for the page itself so a new deploy shows at once.
    event.respondWith(
      fetch(request)
        .then((response) => {
          if (response.ok) caches.open(VERSION).then((cache) => cache.put('/', response.clone()));
          return response;
        })
        .catch(() => caches.match('/', { cacheName: VERSION, ignoreVary: true })),
    );
    return;
  }
  event.respondWith(staleWhileRevalidate(request, event));
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const target = event.notification.data?.url || '/';
  event.waitUntil(
    self.clients.matchAll({ type: 'window', includeUncontrolled: true }).then((list) => {
      for (const client of list) {
        if ('focus' in client) {
          client.navigate(target);
          return client.focus();
        }
      }
      return self.clients.openWindow(target);
    }),
  );
});
