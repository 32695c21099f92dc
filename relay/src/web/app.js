// The relayops web app: count, send and read messages, and show the relay's readiness.
//
// Plain ES module, no dependencies, no build step. Served under a strict Content-Security-Policy, so it
// never uses inline styles or handlers, and it builds every node with textContent: message text and
// server answers are data, never markup.

const STATUS_POLL_MS = 15_000;
const REQUEST_TIMEOUT_MS = 15_000;
const MAX_TTL_SECONDS = 31_536_000;
// The relay accepts ids only in the canonical hyphenated form, so the check here is the same.
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const EXAMPLE_ID = "0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b";

const $ = (id) => document.getElementById(id);
const numberFormat = new Intl.NumberFormat();
const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const timeFormat = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });
const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const utf8 = new TextEncoder();

// Expiry times of the messages sent from this page, so that a later 404 for one of them can say
// "expired" instead of the relay's deliberately vague "not found or expired".
const sentExpiries = new Map();

// ---------------------------------------------------------------------------------------------------
// DOM helpers

/** Build an element. Children that are strings become text nodes, so data can never become markup. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return el;
}

function setText(el, text) {
  // Live regions announce every write; skip writes that change nothing.
  if (el.textContent !== text) el.textContent = text;
}

function setBusy(button, busy, busyLabel) {
  // Not `disabled`: a disabled button drops keyboard focus to <body> in the middle of a flow.
  if (busy) {
    // Keep the button's width while its label is the (shorter) busy one: a narrower button can
    // re-flow its card, and every card below would jump (a layout shift).
    button.style.minWidth = `${button.getBoundingClientRect().width}px`;
    button.dataset.label = button.textContent;
    button.textContent = busyLabel;
    button.setAttribute("aria-disabled", "true");
  } else {
    if (button.dataset.label) button.textContent = button.dataset.label;
    button.removeAttribute("aria-disabled");
    button.style.minWidth = "";
  }
}

const isBusy = (button) => button.getAttribute("aria-disabled") === "true";

function setFieldError(input, errorEl, message) {
  errorEl.textContent = message || "";
  if (message) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
}

/** The relay writes details in lower case without a full stop; show them as sentences. */
function sentence(text) {
  const trimmed = text.trim();
  if (trimmed === "") return "";
  const capitalised = trimmed[0].toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capitalised) ? capitalised : `${capitalised}.`;
}

function formatTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : dateFormat.format(date);
}

function relativeTo(iso, now = Date.now()) {
  let seconds = Math.round((new Date(iso).getTime() - now) / 1000);
  // A minute or more away: to the nearest minute, so an hour's TTL read back a moment after the send
  // (3,599 s) says "in 1 hour", as the form's hint did, not "in 60 minutes".
  if (Math.abs(seconds) >= 59) seconds = Math.round(seconds / 60) * 60;
  const units = [
    ["year", 31_536_000],
    ["day", 86_400],
    ["hour", 3_600],
    ["minute", 60],
  ];
  for (const [unit, size] of units) {
    if (Math.abs(seconds) >= size) return relativeFormat.format(Math.round(seconds / size), unit);
  }
  return relativeFormat.format(seconds, "second");
}

function timeEl(iso) {
  return h("time", { datetime: iso }, formatTime(iso));
}

function plural(n, word) {
  return `${numberFormat.format(n)} ${word}${n === 1 ? "" : "s"}`;
}

function describeDuration(seconds) {
  const parts = [];
  let rest = seconds;
  for (const [word, size] of [["day", 86_400], ["hour", 3_600], ["minute", 60], ["second", 1]]) {
    const n = Math.floor(rest / size);
    if (n > 0) parts.push(plural(n, word));
    rest -= n * size;
  }
  return parts.slice(0, 2).join(" ");
}

// ---------------------------------------------------------------------------------------------------
// The API client

/** A request id of our own, so that even a request that never got an answer has something to quote. */
function newRequestId() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  // randomUUID needs a secure context; plain-HTTP deployments still have getRandomValues.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function parseRetryAfter(value) {
  if (!value) return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

/** The last segment of a problem type: `urn:relayops:problem:message-not-found` -> `message-not-found`. */
function problemCode(problem) {
  const type = problem && typeof problem.type === "string" ? problem.type : "";
  return type.split(/[:/]/).pop() || "";
}

/**
 * One request to the relay. Never throws: every outcome, including a network failure, comes back as
 * `{ ok, status, data, problem, requestId, retryAfter, networkError, timedOut }`.
 */
async function api(method, path, body) {
  const sentId = newRequestId();
  const headers = { Accept: "application/json, application/problem+json", "X-Request-Id": sentId };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
  try {
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "same-origin",
      signal: controller.signal,
    });
    let data = null;
    try {
      data = await response.json();
    } catch {
      // A body that is not JSON (a proxy's HTML error page, say) is reported by status alone.
    }
    const fromBody = data && typeof data.request_id === "string" && data.request_id ? data.request_id : null;
    return {
      ok: response.ok,
      status: response.status,
      data: response.ok ? data : null,
      problem: response.ok ? null : data,
      requestId: fromBody || response.headers.get("x-request-id") || sentId,
      retryAfter: parseRetryAfter(response.headers.get("retry-after")),
    };
  } catch {
    return { ok: false, status: 0, networkError: true, timedOut: controller.signal.aborted, requestId: sentId };
  } finally {
    clearTimeout(timer);
  }
}

/** Turn a failed request into what a person needs: what happened, what to do, what to quote. */
function explainFailure(result, { subject = "request", id } = {}) {
  const code = problemCode(result.problem);
  const serverDetail = result.problem && typeof result.problem.detail === "string" ? sentence(result.problem.detail) : "";
  const wait = result.retryAfter ? `Try again in ${plural(result.retryAfter, "second")}.` : "Try again shortly.";
  if (result.networkError) {
    return {
      kind: "network",
      title: result.timedOut ? "The relay did not answer" : "Cannot reach the relay",
      detail: result.timedOut
        ? `No answer within ${REQUEST_TIMEOUT_MS / 1000} seconds. The relay may be overloaded; try again.`
        : "The request did not reach the relay: check your connection, or whether the relay is running.",
      requestLabel: "Request id (no answer received)",
      requestId: result.requestId,
    };
  }
  let failure;
  if (result.status === 404 && (code === "message-not-found" || !code)) {
    const expiredAt = id ? sentExpiries.get(id.toLowerCase()) : undefined;
    failure = expiredAt && Date.parse(expiredAt) <= Date.now()
      ? {
          kind: "expired",
          title: "Message expired",
          detail: `This message expired ${relativeTo(expiredAt)} (${formatTime(expiredAt)}) and can no longer be read.`,
        }
      : {
          kind: "not-found",
          title: "Message not found",
          detail: "No message has this id. It may never have existed, or it has expired or been deleted.",
        };
  } else if (result.status === 400 && code === "malformed-id") {
    failure = {
      kind: "malformed-id",
      title: "Malformed message id",
      detail: `The relay accepts only UUIDs as message ids, like ${EXAMPLE_ID}.`,
    };
  } else if (result.status === 429) {
    failure = { kind: "rate-limited", title: "Too many requests", detail: `The relay is limiting requests from this client. ${wait}` };
  } else if (result.status === 503) {
    failure = { kind: "unavailable", title: "Relay unavailable", detail: `The relay cannot serve this ${subject} right now. ${wait}` };
  } else if (result.status === 413) {
    failure = { kind: "too-large", title: "Message too large", detail: serverDetail || "The message is larger than this relay accepts." };
  } else if (result.status >= 400 && result.status < 500) {
    failure = { kind: "rejected", title: "The relay rejected this request", detail: serverDetail || `HTTP ${result.status}.` };
  } else {
    failure = {
      kind: "server-error",
      title: `Relay error (HTTP ${result.status})`,
      detail: "The relay failed to handle this request. Quote the request id to its operators.",
    };
  }
  return { ...failure, requestLabel: "Request id", requestId: result.requestId };
}

function renderFailure(container, failure) {
  container.replaceChildren(
    h("div", { class: "notice notice-error", "data-kind": failure.kind },
      h("p", { class: "notice-title" }, failure.title),
      h("p", {}, failure.detail),
      failure.requestId
        ? h("p", { class: "request-id small" },
            `${failure.requestLabel}: `,
            h("code", { class: "mono selectable" }, failure.requestId))
        : null,
    ),
  );
}

// ---------------------------------------------------------------------------------------------------
// Status strip: readiness and version from /readyz

const statusEl = $("status");
let statusTimer = null;

async function checkStatus() {
  const result = await api("GET", "/readyz");
  const body = result.data || result.problem || {};
  let state;
  let label;
  if (result.networkError) {
    state = "unreachable";
    label = "Relay unreachable";
  } else if (result.ok) {
    state = "ready";
    label = "Relay ready";
  } else {
    state = "not-ready";
    label = result.status === 503 ? "Relay not ready" : `Relay status unknown (HTTP ${result.status})`;
  }
  statusEl.dataset.state = state;
  setText($("status-label"), label);
  setText($("status-version"), typeof body.version === "string" ? `v${body.version.replace(/^v/, "")}` : "");
  const detail = typeof body.detail === "string" && body.detail ? body.detail : "";
  statusEl.title = `Checked ${timeFormat.format(new Date())}`;
  // Say why in words on the page too: a tooltip is out of reach for keyboard and touch users.
  let banner = "";
  if (state === "unreachable") banner = "The relay cannot be reached: sending and reading messages will fail until it is back.";
  else if (state === "not-ready") banner = `The relay is not ready${detail ? ` (${detail})` : ""}: sending and reading messages may fail.`;
  setText($("status-banner"), banner);
}

function scheduleStatus() {
  clearInterval(statusTimer);
  statusTimer = null;
  // Polling a hidden tab wastes the relay's and the battery's time; catch up when it is shown again.
  if (document.visibilityState === "hidden") return;
  checkStatus();
  statusTimer = setInterval(checkStatus, STATUS_POLL_MS);
}

// ---------------------------------------------------------------------------------------------------
// Message count

const countButton = $("count-refresh");

async function refreshCount() {
  if (isBusy(countButton)) return;
  setBusy(countButton, true, "Refreshing…");
  const result = await api("GET", "/messages");
  setBusy(countButton, false);
  if (result.ok && result.data && Number.isFinite(result.data.count)) {
    $("count-error").replaceChildren();
    setText($("count"), numberFormat.format(result.data.count));
    setText($("count-meta"), `Updated ${timeFormat.format(new Date())}`);
  } else {
    renderFailure($("count-error"), explainFailure(result, { subject: "count" }));
    setText($("count-meta"), "Could not update the count");
  }
}

// ---------------------------------------------------------------------------------------------------
// Send a message

const sendForm = $("send-form");
const sendButton = $("send-button");
const messageInput = $("message");
const ttlInput = $("ttl");
const ttlHint = $("ttl-hint");
const TTL_HINT = ttlHint.textContent;

function updateMessageSize() {
  setText($("message-bytes"), plural(utf8.encode(messageInput.value).length, "byte"));
}

/** The TTL field as a number, `null` when empty, or an error message. */
function readTtl() {
  if (ttlInput.validity.badInput) return { error: "Enter a whole number of seconds." };
  const raw = ttlInput.value.trim();
  if (raw === "") return { ttl: null };
  if (!/^\d+$/.test(raw)) return { error: "Enter a whole number of seconds." };
  const ttl = Number(raw);
  if (ttl < 1 || ttl > MAX_TTL_SECONDS) {
    return { error: `Enter a number from 1 to ${numberFormat.format(MAX_TTL_SECONDS)} (one year).` };
  }
  return { ttl };
}

function updateTtlHint() {
  const { ttl, error } = readTtl();
  ttlHint.textContent = error || ttl === null ? TTL_HINT : `Expires ${describeDuration(ttl)} after it is sent.`;
  if (!error && ttlInput.hasAttribute("aria-invalid")) setFieldError(ttlInput, $("ttl-error"), "");
}

async function copyText(text, sourceEl) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // No clipboard access (plain HTTP, or permission denied): select the text for a manual copy.
    const range = document.createRange();
    range.selectNodeContents(sourceEl);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    return false;
  }
}

function renderSent(message) {
  const idCode = h("code", { class: "mono id-value selectable", id: "sent-id" }, message.id);
  const copyButton = h("button", { type: "button", class: "button button-secondary button-small", id: "copy-id" }, "Copy id");
  const copyStatus = h("p", { class: "small copy-status", id: "copy-status" });
  const readBackButton = h("button", { type: "button", class: "button-link", id: "read-sent" }, "Read it back");
  copyButton.addEventListener("click", async () => {
    const copied = await copyText(message.id, idCode);
    copyStatus.dataset.state = copied ? "ok" : "failed";
    copyStatus.textContent = copied
      ? "Id copied to the clipboard."
      : "Could not copy automatically: the id is selected, press Ctrl+C (⌘C on a Mac) to copy it.";
  });
  readBackButton.addEventListener("click", () => {
    $("lookup-id").value = message.id;
    setFieldError($("lookup-id"), $("lookup-error"), "");
    $("lookup-id").focus();
    $("read-form").requestSubmit();
  });
  const expiry = message.expires_at
    ? h("p", { class: "small muted" }, "Expires ", timeEl(message.expires_at), ` (${relativeTo(message.expires_at)}).`)
    : h("p", { class: "small muted" }, "Never expires.");
  $("send-result").replaceChildren(
    h("div", { class: "notice notice-success" },
      h("p", { class: "notice-title" }, "Message sent"),
      h("p", { class: "small muted" }, "Its id:"),
      h("div", { class: "id-row" }, idCode, copyButton),
      expiry,
      copyStatus,
      h("p", { class: "small" }, readBackButton),
    ),
  );
}

async function sendMessage(event) {
  event.preventDefault();
  if (isBusy(sendButton)) return;
  const text = messageInput.value;
  const { ttl, error: ttlError } = readTtl();
  // Whatever happens next, an earlier send's outcome no longer describes this one.
  $("send-result").replaceChildren();
  $("send-error").replaceChildren();
  setFieldError(messageInput, $("message-error"), text === "" ? "Enter a message to send." : "");
  setFieldError(ttlInput, $("ttl-error"), ttlError || "");
  if (text === "") return messageInput.focus();
  if (ttlError) return ttlInput.focus();

  const body = ttl === null ? { message: text } : { message: text, ttl_seconds: ttl };
  setBusy(sendButton, true, "Sending…");
  const result = await api("POST", "/messages", body);
  setBusy(sendButton, false);
  if (result.ok && result.data && typeof result.data.id === "string") {
    sentExpiries.set(result.data.id.toLowerCase(), result.data.expires_at || null);
    renderSent(result.data);
    messageInput.value = "";
    updateMessageSize();
    refreshCount();
  } else {
    renderFailure($("send-error"), explainFailure(result, { subject: "message" }));
  }
}

// ---------------------------------------------------------------------------------------------------
// Read a message

const readForm = $("read-form");
const readButton = $("read-button");
const lookupInput = $("lookup-id");

function lookupError(id) {
  if (id === "") return "Enter a message id.";
  if (!UUID_RE.test(id)) return "Not a UUID: expected 8-4-4-4-12 hexadecimal digits.";
  return "";
}

function renderMessage(message) {
  const rows = [
    ["Id", h("code", { class: "mono selectable" }, message.id)],
    ["Created", timeEl(message.created_at)],
  ];
  if (message.updated_at && message.updated_at !== message.created_at) rows.push(["Updated", timeEl(message.updated_at)]);
  rows.push([
    "Expires",
    message.expires_at ? h("span", {}, timeEl(message.expires_at), ` (${relativeTo(message.expires_at)})`) : "Never",
  ]);
  $("read-result").replaceChildren(
    h("article", { class: "notice notice-message", "aria-label": "Message" },
      h("p", { class: "notice-title" }, "Message"),
      h("div", { class: "message-text", id: "message-text" }, String(message.message ?? "")),
      h("dl", { class: "meta" }, rows.map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, value)))),
    ),
  );
}

async function readMessage(event) {
  event.preventDefault();
  if (isBusy(readButton)) return;
  // Pasted ids often carry spaces or line breaks around them.
  const id = lookupInput.value.trim();
  const problem = lookupError(id);
  setFieldError(lookupInput, $("lookup-error"), problem);
  $("read-result").replaceChildren();
  $("read-error").replaceChildren();
  // One mistake, one error: an id that is not a UUID is flagged in the field and not sent (the relay
  // would only say the same again).
  if (problem) return lookupInput.focus();
  setBusy(readButton, true, "Reading…");
  const result = await api("GET", `/messages/${encodeURIComponent(id)}`);
  setBusy(readButton, false);
  if (result.ok && result.data && typeof result.data.id === "string") {
    renderMessage(result.data);
  } else {
    renderFailure($("read-error"), explainFailure(result, { subject: "message", id }));
  }
}

// ---------------------------------------------------------------------------------------------------
// Wiring

function start() {
  countButton.addEventListener("click", refreshCount);

  sendForm.addEventListener("submit", sendMessage);
  messageInput.addEventListener("input", () => {
    updateMessageSize();
    if (messageInput.value !== "") setFieldError(messageInput, $("message-error"), "");
  });
  messageInput.addEventListener("keydown", (event) => {
    // Enter adds a line; Ctrl/Cmd+Enter sends.
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      sendForm.requestSubmit();
    }
  });
  ttlInput.addEventListener("input", updateTtlHint);

  readForm.addEventListener("submit", readMessage);
  // Judge the id on submit, then re-judge as the user fixes it. Not on blur: an error appearing then
  // moves the button away from under the pointer that is clicking it.
  lookupInput.addEventListener("input", () => {
    if (lookupInput.hasAttribute("aria-invalid")) {
      const id = lookupInput.value.trim();
      setFieldError(lookupInput, $("lookup-error"), id === "" ? "" : lookupError(id));
    }
  });

  document.addEventListener("visibilitychange", scheduleStatus);
  window.addEventListener("online", scheduleStatus);

  updateMessageSize();
  updateTtlHint();
  scheduleStatus();
  refreshCount();
}

start();
