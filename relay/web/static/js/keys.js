// Ed25519 login keys made in the browser with WebCrypto. The private key is created
// non-extractable and kept as a CryptoKey in IndexedDB (structured clone keeps it opaque):
// no script, ours included, can ever read its bytes; it can only sign with it.

const DB = "relay-keys", STORE = "keys";
const PREFIX = new TextEncoder().encode("relay-login-v1:");

function open() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function tx(mode, fn) {
  const db = await open();
  return new Promise((resolve, reject) => {
    const t = db.transaction(STORE, mode);
    const req = fn(t.objectStore(STORE));
    t.oncomplete = () => { db.close(); resolve(req?.result); };
    t.onerror = () => { db.close(); reject(t.error); };
  });
}

const b64 = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)));
const unb64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));

export function supported() {
  return Boolean(globalThis.crypto?.subtle && globalThis.indexedDB);
}

// A new key pair for `username`: kept, and its public half returned as base64.
export async function createKey(username) {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  const publicKey = b64(await crypto.subtle.exportKey("raw", pair.publicKey));
  await tx("readwrite", (s) => s.put({ privateKey: pair.privateKey, publicKey }, username));
  return publicKey;
}

export async function storedKey(username) {
  return tx("readonly", (s) => s.get(username));
}

export async function storedUsernames() {
  return (await tx("readonly", (s) => s.getAllKeys())) || [];
}

export async function forgetKey(username) {
  await tx("readwrite", (s) => s.delete(username));
}

// The challenge login of docs/accounts.md: sign "relay-login-v1:" + the challenge's bytes.
export async function loginWithKey(api, username) {
  const key = await storedKey(username);
  if (!key) throw new Error(`no key for ${username} in this browser`);
  const { challenge } = await api.call("POST", "/auth/challenge", { username }, { auth: false });
  const raw = unb64(challenge);
  const message = new Uint8Array(PREFIX.length + raw.length);
  message.set(PREFIX);
  message.set(raw, PREFIX.length);
  const signature = b64(await crypto.subtle.sign({ name: "Ed25519" }, key.privateKey, message));
  api.save(await api.call("POST", "/auth/login/key", { username, challenge, signature }, { auth: false }));
}

export async function registerWithKey(api, username) {
  const publicKey = await createKey(username);
  try {
    await api.call("POST", "/auth/register", { username, public_key: publicKey }, { auth: false });
  } catch (e) {
    await forgetKey(username);
    throw e;
  }
  await loginWithKey(api, username);
}

// Add a new browser key to the logged-in account (POST /users/@me/keys).
export async function addKeyToAccount(api, username) {
  const publicKey = await createKey(username);
  await api.call("POST", "/users/@me/keys", { public_key: publicKey });
}
