// A tiny DOM builder: h("div.cls#id", {attrs, onclick}, ...children). Text is always set as
// text nodes (never innerHTML), so content from the server cannot inject markup.

export function h(spec, attrs, ...children) {
  if (attrs == null || typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs)) {
    if (attrs != null) children.unshift(attrs);
    attrs = {};
  }
  const [, tag = "div", rest = ""] = /^([a-z0-9-]*)(.*)$/i.exec(spec);
  const el = document.createElement(tag || "div");
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className += (el.className ? " " : "") + value;
    else if (key === "value") el.value = value;
    else if (key === "checked") el.checked = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child == null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// Compare snowflake ids (decimal strings) without losing precision.
export function cmpId(a, b) {
  if (a === b) return 0;
  if (a == null) return -1;
  if (b == null) return 1;
  return a.length - b.length || (a < b ? -1 : 1);
}

export function timeOf(iso) {
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export function nameOf(user) {
  return user ? user.display_name || user.username : "unknown";
}

// A modal dialog: returns {root, close}. Escape and the backdrop close it.
export function dialog(title, ...body) {
  const close = () => { root.remove(); document.removeEventListener("keydown", onKey); prev?.focus?.(); };
  const onKey = (e) => { if (e.key === "Escape") close(); };
  const prev = document.activeElement;
  const root = h("div.backdrop", { onclick: (e) => { if (e.target === root) close(); } },
    h("section.dialog", { role: "dialog", "aria-modal": "true", "aria-label": title },
      h("header", h("h2", title), h("button.icon", { onclick: close, "aria-label": "Close" }, "✕")),
      h("div.dialog-body", ...body)));
  document.addEventListener("keydown", onKey);
  document.body.append(root);
  root.querySelector("input, select, textarea, button:not(.icon)")?.focus();
  return { root, close };
}

export function toast(text) {
  const el = h("div.toast", { role: "status" }, text);
  document.body.append(el);
  setTimeout(() => el.remove(), 4000);
}
