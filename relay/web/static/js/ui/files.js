// Files in the composer and in messages (docs/files.md): pick or drop up to 10 files, send them
// as one multipart message with a progress bar (XMLHttpRequest's upload progress: fetch has no
// upload progress, and Chromium streams a request body only over HTTP/2), then show images
// inline (the preview, the full file on click) and other files as download cards.

import { ApiError } from "../api.js";
import { h, replace, toast } from "../dom.js";

export const MAX_FILES = 10;  // per message, as the server counts (413 too_many_files)

export function sizeOf(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

// A request with the bearer token whose body is raw bytes or a form, with upload progress.
// Resolves to the JSON answer; rejects with ApiError (the server's code and message).
export async function send(api, method, path, body, { onprogress, retry = true } = {}) {
  const token = await api.token();
  const answer = await new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, `/v1/api${path}`);
    xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    if (body instanceof Blob) xhr.setRequestHeader("Content-Type", body.type || "application/octet-stream");
    if (onprogress) xhr.upload.onprogress = (e) => { if (e.lengthComputable) onprogress(e.loaded / e.total); };
    xhr.onload = () => {
      let data = null;
      try { data = xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch { /* not JSON */ }
      resolve({ status: xhr.status, data });
    };
    xhr.onerror = () => reject(new ApiError(0, { code: "network", message: "The upload failed (network)" }));
    xhr.send(body);
  });
  if (answer.status >= 200 && answer.status < 300) return answer.data;
  const error = new ApiError(answer.status, answer.data?.error);
  if (answer.status === 401 && error.code === "token_expired" && retry) {
    await api.refresh();
    return send(api, method, path, body, { onprogress, retry: false });
  }
  throw error;
}

// The composer's part: the attach button, the hidden file input, the drop zone and the tray
// of chosen files (each removable). `take()` hands the files over to a send.
export class Attacher {
  constructor(chat) {
    this.chat = chat;
    this.files = [];
    this.input = h("input#file-input", { type: "file", multiple: true, hidden: true, onchange: () => { this.add([...this.input.files]); this.input.value = ""; } });
    this.button = h("button.icon#attach", { type: "button", title: "Attach files", "aria-label": "Attach files", onclick: () => this.input.click() }, "📎");
    this.tray = h("ul.file-tray#file-tray", { "aria-label": "Files to send", hidden: true });
    const root = chat.root;
    root.addEventListener("dragover", (e) => {
      if (!e.dataTransfer?.types.includes("Files") || this.button.disabled) return;
      e.preventDefault();
      root.classList.add("dropping");
    });
    root.addEventListener("dragleave", (e) => { if (!root.contains(e.relatedTarget)) root.classList.remove("dropping"); });
    root.addEventListener("drop", (e) => {
      root.classList.remove("dropping");
      if (!e.dataTransfer?.files.length || this.button.disabled) return;
      e.preventDefault();
      this.add([...e.dataTransfer.files]);
    });
  }

  enable(on) { this.button.disabled = !on; this.button.hidden = !on; if (!on) this.clear(); }

  add(files) {
    const room = MAX_FILES - this.files.length;
    if (files.length > room) toast(`At most ${MAX_FILES} files per message: ${files.length - room} left out`);
    this.files.push(...files.slice(0, Math.max(0, room)));
    this.draw();
    this.chat.input.focus();
  }

  clear() { this.files = []; this.draw(); }

  take() { const files = this.files; this.clear(); return files; }

  draw() {
    this.tray.hidden = !this.files.length;
    replace(this.tray, this.files.map((f, i) => h("li.file-chip", { "data-name": f.name },
      f.type.startsWith("image/") ? thumb(f) : h("span.file-glyph", "📄"),
      h("span.file-name", f.name), h("small", sizeOf(f.size)),
      h("button.icon", { type: "button", "aria-label": `Remove ${f.name}`, onclick: () => { this.files.splice(i, 1); this.draw(); } }, "✕"))));
  }
}

function thumb(file) {
  const url = URL.createObjectURL(file);
  return h("img.file-thumb", { src: url, alt: "", onload: () => URL.revokeObjectURL(url) });
}

// Posts a pending message ({channelId, content, nonce, reply_to, files}) as multipart, its
// progress drawn in `item.bar`. Resolves to the message.
export function upload(api, item) {
  const form = new FormData();
  form.append("payload_json", JSON.stringify({ content: item.content, nonce: item.nonce, reply_to: item.reply_to ?? null }));
  item.files.forEach((f, i) => form.append(`files[${i}]`, f, f.name));
  item.bar ??= h("progress.upload-progress", { max: 1, value: 0, "aria-label": "Upload progress" });
  item.bar.value = 0;
  return send(api, "POST", `/channels/${item.channelId}/messages`, form, { onprogress: (p) => { item.bar.value = p; } })
    .catch((e) => {  // the server's limits (413 file_too_large ...) in words a person reads
      e.message = e.message.replace(/(\d{4,}) bytes/, (_, n) => sizeOf(Number(n)));
      throw e;
    });
}

// What a pending message with files shows under its text: the names and the progress.
export function pendingFiles(item) {
  if (!item.files?.length) return null;
  return h("div.pending-files", h("small", item.files.map((f) => `${f.name} (${sizeOf(f.size)})`).join(", ")), item.failed ? h("p.error.upload-error", { role: "alert" }, item.error) : item.bar);
}

// A message's attachments: images inline (their preview or thumbnail; a click opens the file
// in a lightbox), everything else a card with the name, the size and a download link.
export function attachments(m) {
  if (!m.attachments?.length) return null;
  return h("div.attachments", m.attachments.map((a) => {
    if (a.width && a.content_type.startsWith("image/")) {
      const src = a.preview_url || a.url;
      return h("button.attachment-image", { type: "button", "data-attachment": a.id, title: a.filename, onclick: () => lightbox(a) },
        h("img", { src, alt: a.filename, width: a.width, height: a.height, loading: "lazy" }));
    }
    return h("div.attachment-card", { "data-attachment": a.id },
      h("span.file-glyph", a.content_type === "application/pdf" ? "📕" : "📄"),
      h("div", h("a.file-name", { href: a.url, download: a.filename, rel: "noopener" }, a.filename), h("small.file-size", sizeOf(a.size))));
  }));
}

function lightbox(a) {
  const close = () => { root.remove(); document.removeEventListener("keydown", onKey); };
  const onKey = (e) => { if (e.key === "Escape") close(); };
  const root = h("div.backdrop.lightbox", { onclick: close, role: "dialog", "aria-label": a.filename },
    h("img", { src: a.url, alt: a.filename }),
    h("a.lightbox-open", { href: a.url, target: "_blank", rel: "noopener noreferrer", onclick: (e) => e.stopPropagation() }, "Open original"));
  document.addEventListener("keydown", onKey);
  document.body.append(root);
}
