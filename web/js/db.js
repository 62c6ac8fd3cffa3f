// IndexedDB: tickets (with their QR codes), the offline outbox, and small
// cached values (JWKS for the gate scanner, last orders).

const DB_NAME = 'ticketbuster';
const DB_VERSION = 1;
let opening = null;

function open() {
  if (opening) return opening;
  opening = new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, DB_VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      if (!db.objectStoreNames.contains('tickets')) {
        const store = db.createObjectStore('tickets', { keyPath: 'ticket_id' });
        store.createIndex('owner', 'owner');
      }
      if (!db.objectStoreNames.contains('outbox')) db.createObjectStore('outbox', { keyPath: 'key' });
      if (!db.objectStoreNames.contains('kv')) db.createObjectStore('kv');
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
  return opening;
}

function done(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function store(name, mode = 'readonly') {
  const db = await open();
  return db.transaction(name, mode).objectStore(name);
}

export const db = {
  async get(name, key) {
    return done((await store(name)).get(key));
  },
  async all(name) {
    return done((await store(name)).getAll());
  },
  async allBy(name, index, value) {
    return done((await store(name)).index(index).getAll(value));
  },
  async put(name, value, key) {
    return done((await store(name, 'readwrite')).put(value, key));
  },
  async putMany(name, values) {
    const database = await open();
    const tx = database.transaction(name, 'readwrite');
    const os = tx.objectStore(name);
    for (const value of values) os.put(value);
    return new Promise((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
    });
  },
  async delete(name, key) {
    return done((await store(name, 'readwrite')).delete(key));
  },
};
