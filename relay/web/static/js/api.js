// REST client: same-origin /v1/api calls with the bearer token, refreshed before it expires and
// once more on a 401 token_expired. The session (tokens) lives in localStorage, so a reload
// keeps the login; logging out or a revoked session clears it.

const KEY = "relay.session";

export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = error?.code || "error";
    this.fields = error?.fields || {};
  }
}

export class Api {
  constructor() {
    this.session = JSON.parse(localStorage.getItem(KEY) || "null");
    this.onLoggedOut = () => {};
    this.refreshing = null;
  }

  get loggedIn() { return this.session != null; }

  save(tokens) {
    this.session = {
      ...this.session, ...tokens,
      expires_at: Date.now() + (tokens.expires_in ?? 900) * 1000,
    };
    localStorage.setItem(KEY, JSON.stringify(this.session));
  }

  forget() {
    this.session = null;
    localStorage.removeItem(KEY);
  }

  async token() {
    if (!this.session) throw new ApiError(401, { code: "missing_token", message: "not logged in" });
    if (Date.now() > this.session.expires_at - 30_000) await this.refresh();
    return this.session.access_token;
  }

  // One refresh at a time: the refresh token rotates, so two at once would revoke the session.
  refresh() {
    this.refreshing ??= (async () => {
      try {
        const tokens = await this.call("POST", "/auth/refresh",
          { refresh_token: this.session.refresh_token }, { auth: false });
        this.save(tokens);
      } catch (e) {
        if (e.status === 401 || e.status === 403) { this.forget(); this.onLoggedOut(); }
        throw e;
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  async call(method, path, body, { auth = true, headers = {}, retry = true } = {}) {
    const init = { method, headers: { ...headers } };
    if (auth) init.headers.Authorization = `Bearer ${await this.token()}`;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(`/v1/api${path}`, init);
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (response.ok) return data;
    const error = new ApiError(response.status, data?.error);
    if (auth && response.status === 401) {
      if (error.code === "token_expired" && retry) {
        await this.refresh();
        return this.call(method, path, body, { auth, headers, retry: false });
      }
      this.forget();
      this.onLoggedOut();
    }
    throw error;
  }

  async login(username, password) {
    this.save(await this.call("POST", "/auth/login", { username, password }, { auth: false }));
  }

  async register(username, password) {
    await this.call("POST", "/auth/register", { username, password }, { auth: false });
    await this.login(username, password);
  }

  async logout() {
    try { await this.call("POST", "/auth/logout"); } finally { this.forget(); }
  }
}
