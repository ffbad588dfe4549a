// The web client's entry: logged out, the login screen; logged in, the shell fed by the gateway.
// `/invite/CODE` opens the invite's preview (after logging in, if need be).

import { Api } from "./api.js";
import { dialog, h, replace, toast } from "./dom.js";
import { Gateway } from "./gateway.js";
import { Store } from "./state.js";
import { mountAuth } from "./ui/auth.js";
import { Shell } from "./ui/shell.js";
import { initPush } from "./ui/push.js";

class App {
  constructor(root) {
    this.root = root;
    this.api = new Api();
    this.api.onLoggedOut = () => this.loggedOut();
    this.invite = /^\/invite\/([A-Za-z0-9_-]{1,64})$/.exec(location.pathname)?.[1] || null;
    this.applyTheme(localStorage.getItem("relay.theme"));
  }

  start() {
    if (this.api.loggedIn) this.loggedIn();
    else mountAuth(this.root, this.api, () => this.loggedIn(), { invite: this.invite });
  }

  loggedIn() {
    initPush(this);
    this.store = new Store(this.api);
    this.gateway = new Gateway(this.api);
    this.shell = new Shell(this);
    replace(this.root, this.shell.root);
    this.shell.status("connecting");
    this.gateway.addEventListener("status", (e) => this.shell.status(e.detail));
    this.gateway.addEventListener("dispatch", (e) => {
      this.store.apply(e.detail.t, e.detail.d);
      if (e.detail.t === "READY" && this.gateway.presence) this.gateway.setPresence(this.gateway.presence);
    });
    this.store.addEventListener("change", (e) => this.shell.changed(e.detail));
    let first = true;
    this.store.addEventListener("change", (e) => {
      if (e.detail.what === "ready" && first) { first = false; if (this.invite) this.showInvite(this.invite); }
    });
    // Back online or back in view: reconnect now rather than at the next backoff step.
    this.wake = () => { if (this.gateway.status === "reconnecting" && !this.gateway.ws) { clearTimeout(this.gateway.retry); this.gateway.connect(); } };
    addEventListener("online", this.wake);
    document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") this.shell.chat.maybeAck(); });
    this.gateway.start().catch((e) => { toast(e.message); this.shell.status("failed"); });
    window.relay = this;  // for the console (and the browser tests)
  }

  loggedOut() {
    this.gateway?.stop();
    removeEventListener("online", this.wake);
    document.querySelectorAll(".backdrop").forEach((el) => el.remove());
    mountAuth(this.root, this.api, () => this.loggedIn(), {});
  }

  async logout() {
    await this.api.logout().catch(() => {});
    this.loggedOut();
  }

  async showInvite(code) {
    this.invite = null;
    history.replaceState(null, "", "/");
    try {
      const invite = await this.api.call("GET", `/invites/${encodeURIComponent(code)}`);
      const d = dialog("Invitation",
        h("p.invite-preview", "You are invited to ", h("strong#invite-server", invite.server.name), ` (${invite.member_count} members).`),
        h("button.primary#accept-invite", { onclick: async () => {
          try {
            const server = await this.api.call("POST", `/invites/${encodeURIComponent(code)}`);
            this.store.apply("SERVER_CREATE", server);
            d.close();
            this.shell.openServer(server.id);
          } catch (e) { toast(e.message); }
        } }, "Join"));
    } catch (e) { toast(`Invite: ${e.message}`); }
  }

  applyTheme(theme) {
    if (theme) document.documentElement.dataset.theme = theme;
    else delete document.documentElement.dataset.theme;
  }

  toggleTheme() {
    const dark = matchMedia("(prefers-color-scheme: dark)").matches;
    const current = document.documentElement.dataset.theme || (dark ? "dark" : "light");
    const next = current === "dark" ? "light" : "dark";
    localStorage.setItem("relay.theme", next);
    this.applyTheme(next);
  }
}

new App(document.getElementById("app")).start();
