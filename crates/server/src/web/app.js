// ohd's own page: the conversations, one of them followed live, a message box and a Stop button.
//
// Plain browser JavaScript with no framework and no build step: the file is compiled into the
// ohd binary (`include_str!`), so `cargo run` serves it as it is. It uses the same API as every
// other client: REST under /api and Socket.IO at /socket.io/.
//
// All text that comes from the server or the agent reaches the page through text nodes
// (`el()` below), never through innerHTML.

const KEY_STORAGE = "ohd.sessionApiKey";
const LIST_LIMIT = 50;
/** Outputs longer than this are folded (a click opens them). */
const FOLD_LINES = 14;
const FOLD_CHARS = 1500;

/** Agent states in which Stop means something. */
const STOPPABLE = new Set([
  "running", "paused", "rate_limited", "awaiting_user_confirmation", "user_confirmed",
]);
const STATE_LABELS = {
  loading: "Loading",
  init: "Starting",
  running: "Running",
  awaiting_user_input: "Waiting for your message",
  paused: "Paused",
  stopped: "Stopped",
  finished: "Finished",
  rejected: "Rejected",
  error: "Error",
  // The state's reason says what is waited out ("could not reach the model, retrying").
  rate_limited: "Retrying",
  awaiting_user_confirmation: "Waiting for confirmation",
  user_confirmed: "Confirmed",
  user_rejected: "Rejected",
};
/** State changes worth a line in the history; the others only move the badge. */
// Not `rate_limited`: the badge and the retry notice say it while it lasts.
const NOTABLE_STATES = new Set(["stopped", "paused", "finished", "error", "rejected"]);

// ---------------------------------------------------------------------------------------------
// DOM helpers

/**
 * Builds an element. Children that are not nodes become text nodes, so whatever the server sent
 * is shown as text and never parsed as HTML.
 */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (selector) => document.querySelector(selector);

function shortTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function relativeTime(iso) {
  const date = new Date(iso);
  const seconds = (Date.now() - date.getTime()) / 1000;
  if (Number.isNaN(seconds)) return "";
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return date.toLocaleDateString();
}

function lineCount(text) {
  if (!text) return 0;
  return text.split("\n").length - (text.endsWith("\n") ? 1 : 0);
}

// ---------------------------------------------------------------------------------------------
// Session key and REST

function sessionKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

function setSessionKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    notice("error", "This browser does not let the page store the key.");
  }
}

class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const key = sessionKey();
  if (key) headers["X-Session-API-Key"] = key;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "The server cannot be reached.", "NETWORK");
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    // Not JSON: the status says enough.
  }
  if (response.status === 401) {
    showKeyForm("This server needs its session API key.");
    throw new ApiError(401, "The session API key is missing or wrong.", data?.code);
  }
  if (!response.ok) {
    throw new ApiError(response.status, data?.error || `The server answered ${response.status}.`, data?.code);
  }
  return data;
}

// ---------------------------------------------------------------------------------------------
// Socket.IO
//
// A small hand-written client instead of socket.io-client: the page has no build step and ships
// inside the binary, and the official client is a ~50 KB bundle to vendor and keep current for
// the few packets this page needs. Over one WebSocket (Engine.IO v4, websocket transport only):
//   Engine.IO  "0{...}" open (ping interval), "2" ping -> answer "3", "1" close, "4..." message
//   Socket.IO  inside a message: "0" connect / connected, "2[...]" event, "4{...}" connect error
// Resuming is the server's job: a reconnect says `latest_event_id=<last id seen>` and the server
// sends only the events after it, in order. The page also drops any id it has seen, anyway.

const RECONNECT_DELAYS_MS = [250, 500, 1000, 2000, 4000, 8000];
/** An attempt that has neither opened nor failed by then is given up and tried again. Longer
 *  than the few seconds Chromium may hold a new connection back after earlier ones failed, so
 *  the page does not give up attempts the browser is only delaying. */
const CONNECT_TIMEOUT_MS = 15000;

class ConversationSocket {
  /**
   * @param {string} conversationId
   * @param {{lastId: () => number, onEvent: (event: object) => void,
   *          onStatus: (status: string, detail?: string) => void,
   *          onRefused: (message: string, msgId?: string) => void}} handlers
   */
  constructor(conversationId, handlers) {
    this.conversationId = conversationId;
    this.handlers = handlers;
    this.ws = null;
    this.joined = false;
    this.closedByUs = false;
    this.attempt = 0;
    this.retryTimer = null;
    this.heartbeatTimer = null;
    this.heartbeatMs = 45000;
  }

  start() {
    this.closedByUs = false;
    this.open();
  }

  stop() {
    this.closedByUs = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.heartbeatTimer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.joined = false;
  }

  /** Sends an `oh_user_action`; false when the socket is not joined. */
  send(action) {
    if (!this.joined || !this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send("42" + JSON.stringify(["oh_user_action", action]));
    return true;
  }

  /** Reconnects now rather than at the next retry (the browser came back online). */
  nudge() {
    if (this.closedByUs || this.ws) return;
    clearTimeout(this.retryTimer);
    this.open();
  }

  open() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({
      EIO: "4",
      transport: "websocket",
      conversation_id: this.conversationId,
      latest_event_id: String(this.handlers.lastId()),
    });
    this.handlers.onStatus(this.attempt === 0 ? "connecting" : "reconnecting");
    let ws;
    try {
      ws = new WebSocket(`${scheme}//${location.host}/socket.io/?${query}`);
    } catch {
      // A browser may refuse to even start a connection (a blocked port, a bad address, a
      // policy): that is one more failed attempt, not the end of retrying.
      this.retryLater();
      return;
    }
    this.ws = ws;
    this.joined = false;
    const connectTimer = setTimeout(() => {
      if (ws === this.ws && ws.readyState === WebSocket.CONNECTING) ws.close();
    }, CONNECT_TIMEOUT_MS);
    ws.onopen = () => clearTimeout(connectTimer);
    ws.onmessage = (message) => {
      if (ws === this.ws && typeof message.data === "string") this.onPacket(message.data);
    };
    ws.onclose = () => {
      clearTimeout(connectTimer);
      if (ws !== this.ws) return;
      this.ws = null;
      this.joined = false;
      clearTimeout(this.heartbeatTimer);
      if (this.closedByUs) return;
      this.retryLater();
    };
  }

  /** The next attempt, after a delay that grows with each failure. */
  retryLater() {
    const delay = RECONNECT_DELAYS_MS[Math.min(this.attempt, RECONNECT_DELAYS_MS.length - 1)];
    this.attempt += 1;
    this.handlers.onStatus("offline", `reconnecting in ${Math.max(1, Math.round(delay / 1000))} s`);
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  onPacket(packet) {
    this.armHeartbeat();
    switch (packet[0]) {
      case "0": {
        // Engine.IO open: join the conversation. The key goes in the CONNECT payload rather than
        // the URL, so it does not end up in proxy or access logs.
        try {
          const handshake = JSON.parse(packet.slice(1));
          this.heartbeatMs = (handshake.pingInterval || 25000) + (handshake.pingTimeout || 20000);
        } catch {
          // Keep the default heartbeat.
        }
        const key = sessionKey();
        this.ws.send("40" + (key ? JSON.stringify({ session_api_key: key }) : ""));
        break;
      }
      case "2":
        this.ws.send("3");
        break;
      case "1":
        this.ws.close();
        break;
      case "4":
        this.onSocketIo(packet.slice(1));
        break;
      default:
        break;
    }
  }

  onSocketIo(packet) {
    const type = packet[0];
    const body = packet.slice(1);
    if (type === "0") {
      this.joined = true;
      this.attempt = 0;
      this.handlers.onStatus("connected");
    } else if (type === "2") {
      let message;
      try {
        message = JSON.parse(body);
      } catch {
        return;
      }
      if (Array.isArray(message) && message[0] === "oh_event" && message[1] && typeof message[1] === "object") {
        this.handlers.onEvent(message[1]);
      }
    } else if (type === "4") {
      let refusal = {};
      try {
        refusal = JSON.parse(body);
      } catch {
        // An unreadable refusal is still a refusal.
      }
      this.stop();
      this.handlers.onRefused(refusal.message || "The server refused the connection.", refusal.data?.msg_id);
    }
  }

  /** A server that stops pinging is gone even if the browser has not noticed: start over. */
  armHeartbeat() {
    clearTimeout(this.heartbeatTimer);
    const ws = this.ws;
    this.heartbeatTimer = setTimeout(() => {
      if (ws === this.ws && ws) ws.close();
    }, this.heartbeatMs);
  }
}

// ---------------------------------------------------------------------------------------------
// Page state

const view = {
  /** The conversation shown, or null. */
  id: null,
  socket: null,
  /** Ids of the events shown: the server never repeats one, and the page makes sure of it. */
  seen: new Set(),
  lastId: -1,
  /** Action cards waiting for their observation, by the action's id. */
  cards: new Map(),
  agentState: "",
  connection: "idle",
  /** The text of the last error shown in the conversation, so that a state change to `error`
   * with the same reason does not say it again. */
  lastError: "",
};

// ---------------------------------------------------------------------------------------------
// Notices

/**
 * Shows a notice. Notices with the same `key` (a status id such as STATUS$LLM_RETRY) replace
 * each other instead of stacking: the fifth retry is one line, not five.
 */
function notice(kind, text, key) {
  const box = $("#notices");
  if (key) {
    for (const old of box.querySelectorAll(".notice")) {
      if (old.dataset.key === key) old.remove();
    }
  }
  const item = el("div", {
    class: `notice ${kind}`, role: kind === "error" ? "alert" : "status", dataset: key ? { key } : {},
  },
    el("span", { class: "notice-text" }, text),
    el("button", {
      type: "button", class: "notice-close", "aria-label": "Dismiss",
      onclick: () => item.remove(),
    }, "×"));
  box.append(item);
  while (box.children.length > 4) box.firstElementChild.remove();
  // A retry's notice stays while the wait lasts (the state change removes it).
  if (kind !== "error" && key !== "STATUS$LLM_RETRY") setTimeout(() => item.remove(), 6000);
}

// ---------------------------------------------------------------------------------------------
// Conversation list

async function loadConversations() {
  let page;
  try {
    page = await api(`/api/conversations?limit=${LIST_LIMIT}`);
  } catch (error) {
    if (error.status !== 401) notice("error", `Cannot list conversations: ${error.message}`);
    return;
  }
  const list = $("#conversation-list");
  const items = (page?.results || []).map((conversation) => {
    const id = conversation.conversation_id;
    const current = id === view.id;
    return el("li", {},
      el("a", {
        href: `#/conversations/${encodeURIComponent(id)}`,
        class: "conversation-link",
        "aria-current": current ? "page" : null,
        dataset: { conversationId: id },
      },
      el("span", { class: "conversation-name" }, conversation.title || "Untitled conversation"),
      el("span", { class: "conversation-meta" },
        relativeTime(conversation.last_updated_at || conversation.created_at))));
  });
  list.replaceChildren(...items);
  $("#list-empty").hidden = items.length > 0;
}

function markCurrentInList() {
  for (const link of document.querySelectorAll(".conversation-link")) {
    if (link.dataset.conversationId === view.id) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function createConversation() {
  const button = $("#new-conversation");
  button.disabled = true;
  try {
    const created = await api("/api/conversations", { method: "POST", body: {} });
    location.hash = `#/conversations/${encodeURIComponent(created.conversation_id)}`;
    await loadConversations();
    $("#composer-input").focus();
  } catch (error) {
    if (error.status !== 401) notice("error", `Cannot create a conversation: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------
// One conversation

function route() {
  const match = /^#\/conversations\/([^/]+)$/.exec(location.hash);
  const id = match ? decodeURIComponent(match[1]) : null;
  if (id !== view.id) openConversation(id);
}

async function openConversation(id) {
  if (view.socket) view.socket.stop();
  Object.assign(view, { id, socket: null, seen: new Set(), lastId: -1, cards: new Map(), awaiting: null, lastError: "" });
  $("#events").replaceChildren();
  $("#events-empty").hidden = false;
  setAgentState("");
  markCurrentInList();
  $("#welcome").hidden = id !== null;
  $("#conversation").hidden = id === null;
  if (id === null) {
    setConnection("idle");
    return;
  }
  $("#conversation-title").textContent = "Conversation";
  $("#conversation-id").textContent = id;
  try {
    const info = await api(`/api/conversations/${encodeURIComponent(id)}`);
    if (view.id !== id) return;
    $("#conversation-title").textContent = info.title || "Untitled conversation";
    document.title = `${info.title || "Conversation"} · ohd`;
  } catch (error) {
    if (view.id !== id) return;
    if (error.status === 404 || error.status === 400) {
      notice("error", "That conversation does not exist.");
      location.hash = "#/";
    } else if (error.status !== 401) {
      notice("error", `Cannot open the conversation: ${error.message}`);
    }
    if (error.status !== 0) return;
  }
  connect();
}

function connect() {
  if (view.socket) view.socket.stop();
  const id = view.id;
  const socket = new ConversationSocket(id, {
    lastId: () => view.lastId,
    onEvent: (event) => {
      if (view.id === id) handleEvent(event);
    },
    onStatus: (status, detail) => {
      if (view.id === id) setConnection(status, detail);
    },
    onRefused: (message, msgId) => {
      if (view.id !== id) return;
      setConnection("refused");
      if (msgId === "AUTH$INVALID_SESSION_API_KEY") {
        showKeyForm("This server needs its session API key.");
      } else {
        notice("error", `The server refused the connection: ${message}`);
      }
    },
  });
  view.socket = socket;
  socket.start();
}

function setConnection(status, detail) {
  view.connection = status;
  const node = $("#connection");
  node.dataset.status = status;
  node.textContent = {
    idle: "",
    connecting: "Connecting…",
    reconnecting: "Reconnecting…",
    connected: "Live",
    offline: `Disconnected${detail ? `, ${detail}` : ""}`,
    refused: "Not connected",
  }[status] ?? status;
  updateControls();
}

/** The badge's words: a retry says what it waits out. */
function stateLabel(state, reason) {
  if (!state) return "";
  if (state === "rate_limited" && reason) return reason.charAt(0).toUpperCase() + reason.slice(1);
  return STATE_LABELS[state] || state;
}

function setAgentState(state, reason) {
  // A retry's notice is stale once the agent is past the wait, whatever came of it.
  if (state !== "rate_limited") {
    for (const old of document.querySelectorAll("#notices .notice[data-key='STATUS$LLM_RETRY']")) old.remove();
  }
  view.agentState = state;
  settleConfirmation(state);
  const badge = $("#agent-state");
  badge.dataset.state = state;
  badge.textContent = stateLabel(state, reason);
  badge.title = reason || "";
  updateControls();
}

function updateControls() {
  const live = view.connection === "connected";
  const input = $("#composer-input");
  input.disabled = !live;
  $("#send").disabled = !live;
  $("#stop").disabled = !live || !STOPPABLE.has(view.agentState);
  $("#working").hidden = !(live && view.agentState === "running");
}

function send(action) {
  if (!view.socket || !view.socket.send(action)) {
    notice("error", "Not connected: the message was not sent.");
    return false;
  }
  return true;
}

function submitMessage(event) {
  event.preventDefault();
  const input = $("#composer-input");
  const content = input.value.trim();
  if (!content) return;
  if (send({ action: "message", args: { content } })) input.value = "";
}

function stopAgent() {
  send({ action: "change_agent_state", args: { agent_state: "stopped" } });
}

// ---------------------------------------------------------------------------------------------
// Events

function handleEvent(event) {
  if (event.status_update) {
    handleStatusUpdate(event);
    return;
  }
  if (!Number.isInteger(event.id)) {
    if (event.error) notice("error", event.message || "The server reported an error.");
    return;
  }
  if (view.seen.has(event.id)) return;
  view.seen.add(event.id);
  view.lastId = Math.max(view.lastId, event.id);

  const list = $("#events");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  const node = renderEvent(event);
  if (node) list.append(node);
  if (node && !node.hidden) $("#events-empty").hidden = true;
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function handleStatusUpdate(update) {
  if (update.conversation_title) {
    $("#conversation-title").textContent = update.conversation_title;
    document.title = `${update.conversation_title} · ohd`;
    loadConversations();
  } else if (update.type === "error") {
    // The server stores every error it reports this way as an event of the conversation,
    // which shows it; a notice would say it a second time.
    if (!view.id) notice("error", update.message || "The server reported an error.");
  } else if (update.message) {
    notice("info", update.message, update.id);
  }
}

/** The list item of one event. Observations of a shown action go into its card instead. */
function renderEvent(event) {
  if (typeof event.action === "string") return renderAction(event);
  if (typeof event.observation === "string") return renderObservation(event);
  return item(event, "note", event.message || "");
}

function item(event, kind, ...children) {
  return el("li", {
    class: `event ${kind}`,
    dataset: { eventId: String(event.id), source: event.source || "" },
    title: event.timestamp || null,
  }, ...children);
}

function hidden(event) {
  const node = item(event, "hidden");
  node.hidden = true;
  return node;
}

function thought(text) {
  return text ? el("p", { class: "thought" }, text) : null;
}

function bubble(event, who, text, extra) {
  return item(event, `message ${who}`,
    el("div", { class: "bubble" }, text),
    el("span", { class: "meta" }, who === "user" ? "You" : "Agent", extra ? ` · ${extra}` : "",
      event.timestamp ? ` · ${shortTime(event.timestamp)}` : ""));
}

function renderAction(event) {
  const args = event.args || {};
  if (args.hidden) return hidden(event);
  const byUser = event.source === "user";
  switch (event.action) {
    case "message":
      return byUser
        ? bubble(event, "user", args.content ?? event.message ?? "")
        : bubble(event, "agent", event.message || args.content || "");
    case "finish":
      return bubble(event, "agent", args.final_thought || event.message || "Done.", "finished");
    case "think":
      return item(event, "think", el("span", { class: "label" }, "Thought"), el("p", {}, args.thought || ""));
    case "run":
      return confirmable(event, card(event, byUser ? "You ran" : "Ran", el("code", { class: "command" }, args.command || ""), args.thought));
    case "read":
      return card(event, "Read", el("code", {}, args.path || ""), args.thought);
    case "edit": {
      const verb = { create: "Created", str_replace: "Edited", insert: "Inserted into", undo_edit: "Undid an edit of" }[args.command] || "Edited";
      return confirmable(event, card(event, verb, el("code", {}, args.path || ""), args.thought));
    }
    case "change_agent_state": {
      const wanted = args.agent_state || "";
      const text = byUser
        ? { stopped: "You stopped the agent.", paused: "You paused the agent.", running: "You resumed the agent." }[wanted]
          || `You set the agent's state to ${wanted}.`
        : `The agent's state is set to ${wanted}.`;
      return item(event, "note", text);
    }
    case "system":
    case "condensation_request":
    case "recall":
      return hidden(event);
    case "condensation":
      return item(event, "note condensation",
        folded(args.summary || "", "The history the model sees was condensed; its summary", true));
    default:
      return item(event, "note", event.message || `(${event.action})`);
  }
}

/**
 * An action stored in confirmation mode as awaiting confirmation gets Confirm and Reject
 * buttons. It never gets an observation itself: the server stores it again with the answer,
 * and that copy gets the result.
 */
function confirmable(event, node) {
  if (event.args?.confirmation_state !== "awaiting_confirmation") return node;
  const owner = view.cards.get(event.id);
  view.cards.delete(event.id);
  if (!owner) return node;
  owner.status.className = "status pending";
  owner.status.textContent = "waiting for your confirmation";
  const verb = node.querySelector(".verb");
  if (verb) verb.textContent = event.action === "run" ? "Asks to run" : "Asks to edit";
  const answer = (state) => {
    for (const button of bar.querySelectorAll("button")) button.disabled = true;
    send({ action: "change_agent_state", args: { agent_state: state } });
  };
  const bar = el("div", { class: "confirm-bar" },
    el("span", {}, "Run this?"),
    el("button", { type: "button", class: "confirm", onclick: () => answer("user_confirmed") }, "Confirm"),
    el("button", { type: "button", class: "reject danger", onclick: () => answer("user_rejected") }, "Reject"));
  node.querySelector(".card").append(bar);
  view.awaiting = { status: owner.status, bar };
  return node;
}

/** The agent left the wait for a confirmation: the waiting card says how it ended. */
function settleConfirmation(state) {
  // A restart (loading) leaves the action waiting: the agent reads it back from the log.
  if (!view.awaiting || state === "awaiting_user_confirmation" || state === "loading") return;
  const { status, bar } = view.awaiting;
  view.awaiting = null;
  bar.remove();
  const [outcome, text] = {
    user_confirmed: ["ok", "✓ confirmed"],
    user_rejected: ["failed", "✗ rejected"],
  }[state] || ["failed", "not run"];
  status.className = `status ${outcome}`;
  status.textContent = text;
}

/** An action that waits for its observation: a head line, a status, and a place for the result. */
function card(event, verb, subject, thoughtText) {
  const status = el("span", { class: "status pending" }, "running…");
  const result = el("div", { class: "result" });
  const node = item(event, `action ${event.action}`,
    thought(thoughtText),
    el("div", { class: "card" },
      el("div", { class: "card-head" }, el("span", { class: "verb" }, verb), subject, status),
      result));
  view.cards.set(event.id, { status, result, action: event.action });
  return node;
}

function renderObservation(event) {
  const extras = event.extras || {};
  if (extras.hidden) return hidden(event);
  const owner = Number.isInteger(event.cause) ? view.cards.get(event.cause) : undefined;
  switch (event.observation) {
    case "agent_state_changed": {
      const state = extras.agent_state || "";
      setAgentState(state, extras.reason);
      if (!NOTABLE_STATES.has(state)) return hidden(event);
      const label = stateLabel(state, extras.reason);
      // A reason is said once: not again after the error that gave it, nor after a retry's
      // label, which is the reason itself.
      const sayReason = extras.reason && state !== "rate_limited" && extras.reason !== view.lastError;
      return item(event, `state-note state-${state}`,
        el("span", {}, `Agent: ${label.toLowerCase()}`), sayReason ? el("span", { class: "reason" }, ` (${extras.reason})`) : null);
    }
    case "think":
      return hidden(event);
    case "recall": {
      const knowledge = (extras.microagent_knowledge || []).map((k) => `${k.name} (“${k.trigger}”):\n${k.content}`);
      const text = [extras.repo_instructions, ...knowledge].filter(Boolean).join("\n\n");
      return item(event, "note recall", folded(text, event.message || "Microagents", true));
    }
    case "run":
      return attach(event, owner, runOutput(event),
        event.success === false || (extras.metadata?.exit_code ?? 0) !== 0 ? "failed" : "ok",
        `exit ${extras.metadata?.exit_code ?? "?"}`);
    case "read":
      return attach(event, owner, folded(event.content || "", "Contents", true), "ok", "read");
    case "edit":
      return attach(event, owner,
        extras.diff ? diffView(extras.diff) : folded(event.content || "", "Result", false), "ok", "done");
    case "error":
    case "user_rejected": {
      const text = event.content || event.message || "Error";
      if (event.observation === "error") view.lastError = text;
      const body = [el("p", { class: "error-text" }, text)];
      if (extras.error_id === "STATUS$ERROR_LLM_NOT_CONFIGURED") {
        body.push(el("button", { type: "button", class: "primary", onclick: () => openSettings() }, "Choose a model"));
      }
      return attach(event, owner, el("div", {}, body), "failed",
        event.observation === "error" ? "error" : "rejected", "error");
    }
    default:
      return attach(event, owner, folded(event.content || event.message || "", event.observation, false), "ok", "done");
  }
}

/** Puts an observation into its action's card, or as its own item when there is no card. */
function attach(event, owner, body, outcome, label, kind = "observation") {
  const node = el("div", {
    class: `observation ${event.observation}`,
    dataset: { eventId: String(event.id), source: event.source || "" },
  }, body);
  if (owner) {
    owner.result.append(node);
    owner.status.className = `status ${outcome}`;
    owner.status.textContent = outcome === "ok" ? `✓ ${label}` : `✗ ${label}`;
    view.cards.delete(event.cause);
    return null;
  }
  node.removeAttribute("data-event-id");
  return item(event, kind, node);
}

function runOutput(event) {
  const content = event.content || "";
  if (!content.trim()) return el("p", { class: "empty" }, "(no output)");
  return folded(content, "Output", false);
}

/** Text in a monospace block, folded behind a summary when it is long (or always, if asked). */
function folded(text, title, alwaysFold) {
  const lines = lineCount(text);
  const pre = el("pre", { class: "output" }, text);
  if (!alwaysFold && lines <= FOLD_LINES && text.length <= FOLD_CHARS) return pre;
  return el("details", { class: "fold" },
    el("summary", {}, `${title} · ${lines} line${lines === 1 ? "" : "s"}`), pre);
}

/** A unified diff with added and removed lines marked (by colour and by their +/- sign). */
function diffView(diff) {
  const lines = diff.replace(/\n$/, "").split("\n").map((line) => {
    let kind = "context";
    // The file names are in the card's head already.
    if (line.startsWith("+++ ") || line.startsWith("--- ")) return null;
    else if (line.startsWith("@@")) kind = "hunk";
    else if (line.startsWith("+")) kind = "add";
    else if (line.startsWith("-")) kind = "del";
    return el("span", { class: `diff-line ${kind}` }, line + "\n");
  }).filter(Boolean);
  const pre = el("pre", { class: "diff", "aria-label": "Changes" }, lines);
  if (lines.length <= 40) return pre;
  return el("details", { class: "fold", open: true }, el("summary", {}, `Diff · ${lines.length} lines`), pre);
}

// ---------------------------------------------------------------------------------------------
// Session key form

function showKeyForm(message) {
  const form = $("#key-form");
  form.hidden = false;
  $("#key-toggle").setAttribute("aria-expanded", "true");
  if (message) $("#key-hint").textContent = message + " It is kept in this browser only (localStorage).";
  $("#key-input").focus();
}

function hideKeyForm() {
  $("#key-form").hidden = true;
  $("#key-toggle").setAttribute("aria-expanded", "false");
}

function saveKey(event) {
  event.preventDefault();
  setSessionKey($("#key-input").value.trim());
  $("#key-input").value = "";
  hideKeyForm();
  notice("info", sessionKey() ? "Session key saved." : "Session key forgotten.");
  loadConversations();
  if (view.id) openConversation(view.id);
}

// ---------------------------------------------------------------------------------------------
// Settings: the model, through the same /api/settings the OpenHands web UI uses

/** What the settings form was filled with: only what the user changes is sent back. */
const loadedSettings = { ok: false, model: "", baseUrl: "", keySet: false };

/** The provider part of `provider/model` (a bare name is OpenAI's). */
function providerOf(model) {
  return model.includes("/") ? model.split("/")[0] : "openai";
}

async function openSettings() {
  const form = $("#settings-form");
  form.hidden = false;
  $("#settings-toggle").setAttribute("aria-expanded", "true");
  $("#settings-key").value = "";
  loadedSettings.ok = false;
  let settings = null;
  try {
    settings = await api("/api/settings");
  } catch (error) {
    // 404: nothing saved yet and no model configured, a first run. Anything else: the form
    // would be saved over settings it never saw, so it is not offered.
    if (error.status !== 404) {
      if (error.status !== 401) notice("error", `Cannot read the settings: ${error.message}`, "settings");
      closeSettings();
      return;
    }
  }
  Object.assign(loadedSettings, {
    ok: true,
    model: settings?.llm_model || "",
    baseUrl: settings?.llm_base_url || "",
    keySet: Boolean(settings?.llm_api_key_set),
  });
  $("#settings-model").value = loadedSettings.model;
  $("#settings-base-url").value = loadedSettings.baseUrl;
  $("#settings-key").placeholder = loadedSettings.keySet
    ? "a key is saved; leave empty to keep it"
    : "the provider's key";
  $("#settings-forget-key").hidden = !loadedSettings.keySet;
  $("#settings-model").focus();
}

function closeSettings() {
  $("#settings-form").hidden = true;
  $("#settings-toggle").setAttribute("aria-expanded", "false");
}

async function postSettings(body, done) {
  try {
    await api("/api/settings", { method: "POST", body });
  } catch (error) {
    if (error.status !== 401) notice("error", `The settings were not saved: ${error.message}`, "settings");
    return;
  }
  $("#settings-key").value = "";
  closeSettings();
  notice("info", done, "settings");
}

async function saveSettings(event) {
  event.preventDefault();
  if (!loadedSettings.ok) return;
  const model = $("#settings-model").value.trim();
  const baseUrl = $("#settings-base-url").value.trim();
  const key = $("#settings-key").value;
  if (!model) {
    notice("error", "Name a model, for example openai/gpt-4o or anthropic/claude-sonnet-4-5.", "settings");
    $("#settings-model").focus();
    return;
  }
  // A saved key goes only where it went before: another provider or address needs its own.
  const elsewhere = providerOf(model) !== providerOf(loadedSettings.model) || baseUrl !== loadedSettings.baseUrl;
  if (!key && loadedSettings.keySet && elsewhere) {
    notice("error", `The saved API key is for ${loadedSettings.model || "the previous model"}: type the key for ${model}, or forget the saved one.`, "settings");
    $("#settings-key").focus();
    return;
  }
  // Only what changed is sent: a field left as it was keeps whatever it comes from (the
  // configuration's model or address stays the configuration's).
  const body = {};
  if (model !== loadedSettings.model) body.llm_model = model;
  if (baseUrl !== loadedSettings.baseUrl) body.llm_base_url = baseUrl;
  if (key) body.llm_api_key = key;
  await postSettings(body, `Saved. Conversations started from now use ${model}.`);
}

async function forgetKey() {
  if (!loadedSettings.ok) return;
  await postSettings({ llm_api_key: "" }, "The saved API key is forgotten.");
  // A key from ohd's configuration (LLM_API_KEY) is not the page's to forget: say it still applies.
  try {
    const after = await api("/api/settings");
    if (after?.llm_api_key_set) {
      notice("info", "The saved API key is forgotten; the key in ohd's configuration (LLM_API_KEY) still applies.", "settings");
    }
  } catch {
    // Nothing more to say.
  }
}

// ---------------------------------------------------------------------------------------------
// Start

function start() {
  $("#new-conversation").addEventListener("click", createConversation);
  $("#composer").addEventListener("submit", submitMessage);
  $("#composer-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("#composer").requestSubmit();
    }
  });
  $("#stop").addEventListener("click", stopAgent);
  $("#key-toggle").addEventListener("click", () => {
    if ($("#key-form").hidden) showKeyForm();
    else hideKeyForm();
  });
  $("#key-form").addEventListener("submit", saveKey);
  $("#settings-toggle").addEventListener("click", () => {
    if ($("#settings-form").hidden) openSettings();
    else closeSettings();
  });
  $("#settings-form").addEventListener("submit", saveSettings);
  $("#settings-close").addEventListener("click", closeSettings);
  $("#settings-forget-key").addEventListener("click", forgetKey);
  $("#key-forget").addEventListener("click", () => {
    setSessionKey("");
    hideKeyForm();
    notice("info", "Session key forgotten.");
  });
  window.addEventListener("hashchange", route);
  window.addEventListener("online", () => view.socket?.nudge());
  setInterval(loadConversations, 30000);
  loadConversations();
  route();
}

start();
