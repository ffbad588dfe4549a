// The logged-out screen: log in or register, with a password or with a key kept in this browser.

import { h, replace } from "../dom.js";
import * as keys from "../keys.js";

export function authView(api, onLoggedIn, { invite } = {}) {
  const error = h("p.error", { role: "alert" });
  const username = h("input#username", { name: "username", autocomplete: "username", required: true, minlength: 2, maxlength: 32, placeholder: "username" });
  const password = h("input#password", { name: "password", type: "password", autocomplete: "current-password", minlength: 8, maxlength: 256, placeholder: "password" });
  const busy = (fn) => async (e) => {
    e.preventDefault();
    error.textContent = "";
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    try { await fn(); onLoggedIn(); } catch (err) { error.textContent = err.message; } finally { buttons.forEach((b) => { b.disabled = false; }); }
  };
  const name = () => username.value.trim().toLowerCase();
  const keyButtons = keys.supported()
    ? [h("button#key-login", { type: "button", onclick: busy(() => keys.loginWithKey(api, name())) }, "Log in with this browser's key"),
       h("button#key-register", { type: "button", onclick: busy(() => keys.registerWithKey(api, name())) }, "Register with a new key")]
    : [h("p.hint", "Key login needs HTTPS (or localhost).")];
  const form = h("form.auth-form", { onsubmit: busy(() => api.login(name(), password.value)) },
    h("h1", "Relay"),
    invite ? h("p.hint", "Log in or register to see your invite.") : null,
    h("label", { for: "username" }, "Username"), username,
    h("label", { for: "password" }, "Password"), password,
    h("div.row",
      h("button#login.primary", { type: "submit" }, "Log in"),
      h("button#register", { type: "button", onclick: busy(() => api.register(name(), password.value)) }, "Register")),
    h("fieldset.keys", h("legend", "Or with an Ed25519 key (no password)"), ...keyButtons),
    error);
  keys.supported() && keys.storedUsernames().then((names) => {
    if (names.length && !username.value) username.value = names[0];
  }).catch(() => {});
  return h("div.auth", form);
}

export function mountAuth(root, api, onLoggedIn, opts) {
  replace(root, authView(api, onLoggedIn, opts));
  root.querySelector("#username").focus();
}
