// Corvid's web UI: a client of the WebSocket JSON API (docs/web-api.md).
//
// Everything a person or another user wrote is put into the page with textContent, never
// parsed as HTML; the server's Content-Security-Policy forbids inline scripts besides.
"use strict";

const $ = (id) => document.getElementById(id);
const SESSION_KEY = "corvid.session";
const HISTORY_PAGE = 50;

// ---- The connection: requests with ids, answers, pushed events, reconnection. ----

const api = {
  socket: null,
  nextId: 1,
  waiting: new Map(),
  backoff: 500,
  onEvent: () => {},
  onOpen: () => {},
  onClose: () => {},

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/api/ws`);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.backoff = 500;
      this.onOpen();
    });
    socket.addEventListener("message", (message) => this.receive(message.data));
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.socket = null;
      for (const { reject } of this.waiting.values()) {
        reject({ name: "disconnected", message: "the connection was lost" });
      }
      this.waiting.clear();
      this.onClose();
      // Reconnect by itself, backing off up to 5 s.
      setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 5000);
    });
  },

  isOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  },

  /** Sends one request; resolves with its result or rejects with its error. */
  call(op, fields = {}) {
    if (!this.isOpen()) {
      return Promise.reject({ name: "disconnected", message: "offline; retrying" });
    }
    const id = this.nextId++;
    this.socket.send(JSON.stringify({ id, op, ...fields }));
    return new Promise((resolve, reject) => this.waiting.set(id, { resolve, reject }));
  },

  receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (message.event) {
      this.onEvent(message.event);
      return;
    }
    const waiting = this.waiting.get(message.id);
    if (!waiting) return;
    this.waiting.delete(message.id);
    if (message.error) waiting.reject(message.error);
    else waiting.resolve(message.result);
  },
};

// ---- State kept across reloads: the session, the last message seen, conversations. ----

const state = {
  session: null, // { token, username }
  lastId: 0, // the newest message id received, to resume after
  conversations: new Map(), // peer (lower case) -> { name, unread, lastAt }
  open: null, // the peer whose conversation is shown
  nextBefore: null,
  shown: new Map(), // message id -> its element, in the open conversation
  outbox: [], // sends not yet answered: { clientId, to, text }
  subscribed: false,
};

function storageKey(what) {
  return `corvid.${state.session.username.toLowerCase()}.${what}`;
}

function save() {
  if (!state.session) return;
  localStorage.setItem(SESSION_KEY, JSON.stringify(state.session));
  localStorage.setItem(storageKey("last_id"), String(state.lastId));
  const conversations = [...state.conversations.values()];
  localStorage.setItem(storageKey("conversations"), JSON.stringify(conversations));
}

function restore() {
  try {
    const session = JSON.parse(localStorage.getItem(SESSION_KEY) || "null");
    if (!session || typeof session.token !== "string") return;
    state.session = { token: session.token, username: String(session.username) };
    state.lastId = Number(localStorage.getItem(storageKey("last_id")) || 0);
    const saved = JSON.parse(localStorage.getItem(storageKey("conversations")) || "[]");
    for (const c of saved) {
      if (c && typeof c.name === "string") {
        state.conversations.set(c.name.toLowerCase(), {
          name: c.name,
          unread: Number(c.unread) || 0,
          lastAt: Number(c.lastAt) || 0,
        });
      }
    }
  } catch {
    state.session = null;
  }
}

function forget() {
  localStorage.removeItem(SESSION_KEY);
  state.session = null;
  state.lastId = 0;
  state.conversations.clear();
  state.open = null;
  state.subscribed = false;
  state.outbox = [];
}

// ---- Small view helpers. ----

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function timeOf(ms) {
  const date = new Date(ms);
  const today = new Date();
  return date.toDateString() === today.toDateString()
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleString([], { dateStyle: "short", timeStyle: "short" });
}

function describe(error) {
  if (!error) return "something went wrong";
  return error.message || error.name || String(error);
}

function setStatus() {
  const status = $("status");
  if (!state.session) {
    status.textContent = "";
    status.className = "status";
  } else if (api.isOpen() && state.subscribed) {
    status.textContent = "online";
    status.className = "status online";
  } else {
    status.textContent = "offline: reconnecting…";
    status.className = "status offline";
  }
}

function showView() {
  const loggedIn = state.session !== null;
  $("auth").hidden = loggedIn;
  $("chat").hidden = !loggedIn;
  $("account").hidden = !loggedIn;
  $("me").textContent = loggedIn ? state.session.username : "";
  setStatus();
  if (loggedIn) renderConversations();
}

// ---- Logging in and out. ----

async function login(username, password) {
  const result = await api.call("login", { username, password });
  state.session = { token: result.token, username: result.username };
  state.lastId = Number(localStorage.getItem(storageKey("last_id")) || 0);
  restoreConversationsOf();
  save();
  $("password").value = "";
  $("auth-error").textContent = "";
  showView();
  await subscribe();
}

function restoreConversationsOf() {
  state.conversations.clear();
  try {
    const saved = JSON.parse(localStorage.getItem(storageKey("conversations")) || "[]");
    for (const c of saved) {
      if (c && typeof c.name === "string") {
        state.conversations.set(c.name.toLowerCase(), { name: c.name, unread: 0, lastAt: Number(c.lastAt) || 0 });
      }
    }
  } catch {
    // A damaged saved list starts empty.
  }
}

function sessionOver(notice) {
  forget();
  closeConversation();
  showView();
  $("auth-error").textContent = notice || "";
  $("username").focus();
}

/** Starts pushed events: after the last message seen, or from the oldest unread one. */
async function subscribe() {
  if (!state.session || !api.isOpen()) return;
  const from = state.lastId > 0 ? { after: state.lastId } : "oldest_unread";
  try {
    await api.call("subscribe", { token: state.session.token, from });
    state.subscribed = true;
    setStatus();
    await countUnread();
    await flushOutbox();
  } catch (error) {
    if (error.name === "unauthenticated") sessionOver("Your session has ended; please log in again.");
  }
}

/** Unread counts per conversation, from the server's oldest unread messages. */
async function countUnread() {
  const result = await api.call("fetch_unread", { token: state.session.token, limit: 100 });
  for (const c of state.conversations.values()) c.unread = 0;
  for (const message of result.messages) {
    const c = conversation(message.from);
    if (state.open && state.open.toLowerCase() === message.from.toLowerCase() && !document.hidden) {
      continue;
    }
    c.unread += 1;
    c.lastAt = Math.max(c.lastAt, message.sent_at);
  }
  save();
  renderConversations();
  if (state.open) markShownRead();
}

// ---- Conversations. ----

function conversation(name) {
  const key = name.toLowerCase();
  let c = state.conversations.get(key);
  if (!c) {
    c = { name, unread: 0, lastAt: 0 };
    state.conversations.set(key, c);
  }
  return c;
}

function renderConversations() {
  const list = $("conversations");
  const sorted = [...state.conversations.values()].sort((a, b) => b.lastAt - a.lastAt);
  const items = sorted.map((c) => {
    const item = element("li");
    const button = element("button");
    button.type = "button";
    button.dataset.peer = c.name;
    button.append(element("span", "name", c.name));
    if (c.unread > 0) {
      const badge = element("span", "badge", String(c.unread));
      badge.setAttribute("aria-label", `${c.unread} unread`);
      button.append(badge);
    }
    if (state.open && state.open.toLowerCase() === c.name.toLowerCase()) {
      button.setAttribute("aria-current", "true");
    }
    button.addEventListener("click", () => openConversation(c.name));
    item.append(button);
    return item;
  });
  list.replaceChildren(...items);
  $("no-conversations").hidden = items.length > 0;
}

async function openConversation(name) {
  state.open = name;
  state.shown.clear();
  state.nextBefore = null;
  $("peer").textContent = name;
  $("messages").replaceChildren();
  $("send-error").textContent = "";
  $("conversation").hidden = false;
  $("empty").hidden = true;
  $("chat").classList.add("open");
  conversation(name);
  renderConversations();
  await loadHistory(false);
  $("composer").focus();
}

function closeConversation() {
  state.open = null;
  state.shown.clear();
  $("conversation").hidden = true;
  $("empty").hidden = false;
  $("chat").classList.remove("open");
}

/** The newest page of the conversation, or with `older` the page before what is shown. */
async function loadHistory(older) {
  const peer = state.open;
  const fields = { token: state.session.token, with: peer, limit: HISTORY_PAGE };
  if (older) {
    if (state.nextBefore === null) return;
    fields.before = state.nextBefore;
  }
  let page;
  try {
    page = await api.call("history", fields);
  } catch (error) {
    $("send-error").textContent = describe(error);
    return;
  }
  if (state.open !== peer) return;
  const scroller = $("scroller");
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  const fresh = page.messages.filter((m) => !state.shown.has(m.id));
  const nodes = fresh.map(messageElement);
  if (older) $("messages").prepend(...nodes);
  else $("messages").replaceChildren(...nodes);
  state.nextBefore = page.next_before;
  $("older").hidden = state.nextBefore === null;
  if (older) scroller.scrollTop = scroller.scrollHeight - fromBottom;
  else scroller.scrollTop = scroller.scrollHeight;
  markShownRead();
}

function isMine(message) {
  return message.from.toLowerCase() === state.session.username.toLowerCase();
}

function messageElement(message) {
  const mine = isMine(message);
  const item = element("li", mine ? "message mine" : "message");
  item.dataset.id = String(message.id);
  item.dataset.from = message.from;
  item.append(element("p", "text", message.text));
  const meta = element("div", "meta");
  const time = element("time", "", timeOf(message.sent_at));
  time.dateTime = new Date(message.sent_at).toISOString();
  meta.append(time);
  if (mine) {
    const status = element("span", `status ${message.status}`, message.status);
    status.setAttribute("aria-label", `status: ${message.status}`);
    meta.append(status);
  }
  const remove = element("button", "delete", "Delete");
  remove.type = "button";
  remove.setAttribute("aria-label", "Delete this message");
  remove.addEventListener("click", () => deleteMessage(message.id));
  meta.append(remove);
  item.append(meta);
  state.shown.set(message.id, { item, message });
  return item;
}

/** Shows a message of the open conversation at the bottom, once. */
function appendMessage(message) {
  if (state.shown.has(message.id)) return;
  const scroller = $("scroller");
  const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
  $("messages").append(messageElement(message));
  if (atBottom || isMine(message)) scroller.scrollTop = scroller.scrollHeight;
}

function setReceipt(id, status) {
  const shown = state.shown.get(id);
  if (!shown) return;
  const order = ["sent", "delivered", "read"];
  if (order.indexOf(status) <= order.indexOf(shown.message.status)) return;
  shown.message.status = status;
  const label = shown.item.querySelector(".status");
  if (label) {
    label.textContent = status;
    label.className = `status ${status}`;
    label.setAttribute("aria-label", `status: ${status}`);
  }
}

/** Marks read what the open conversation shows from the other side, if the page is seen. */
async function markShownRead() {
  if (!state.open || document.hidden || !state.session) return;
  const ids = [...state.shown.values()]
    .filter(({ message }) => !isMine(message) && message.status !== "read")
    .map(({ message }) => message.id);
  const c = conversation(state.open);
  c.unread = 0;
  renderConversations();
  save();
  if (ids.length === 0) return;
  for (const id of ids) state.shown.get(id).message.status = "read";
  try {
    await api.call("mark_read", { token: state.session.token, ids });
  } catch {
    // Marked again when the conversation is next shown.
  }
}

async function deleteMessage(id) {
  try {
    await api.call("delete_messages", { token: state.session.token, ids: [id] });
    const shown = state.shown.get(id);
    if (shown) shown.item.remove();
    state.shown.delete(id);
  } catch (error) {
    $("send-error").textContent = describe(error);
  }
}

// ---- Sending. ----

let clientCounter = 0;

/** A client message id unique to this page: the server answers a retry with the original. */
function newClientId() {
  clientCounter = (clientCounter + 1) % 1024;
  return Date.now() * 1024 + clientCounter;
}

async function send(to, text) {
  const entry = { clientId: newClientId(), to, text };
  state.outbox.push(entry);
  await deliver(entry);
}

async function deliver(entry) {
  try {
    const result = await api.call("send", {
      token: state.session.token,
      to: entry.to,
      text: entry.text,
      client_id: entry.clientId,
    });
    state.outbox = state.outbox.filter((e) => e !== entry);
    const c = conversation(entry.to);
    c.lastAt = result.message.sent_at;
    save();
    renderConversations();
    if (state.open && state.open.toLowerCase() === entry.to.toLowerCase()) {
      appendMessage(result.message);
    }
  } catch (error) {
    if (error.name === "disconnected") {
      // Sent again, with the same client id, once the connection is back.
      $("send-error").textContent = "offline: the message will be sent when the connection is back";
      return;
    }
    state.outbox = state.outbox.filter((e) => e !== entry);
    $("send-error").textContent = describe(error);
    if (error.name === "unauthenticated") sessionOver("Your session has ended; please log in again.");
  }
}

async function flushOutbox() {
  $("send-error").textContent = "";
  for (const entry of [...state.outbox]) await deliver(entry);
}

// ---- Pushed events. ----

function onEvent(event) {
  if (!state.session) return;
  if (event.type === "message") {
    const message = event.message;
    if (message.id > state.lastId) state.lastId = message.id;
    const peer = isMine(message) ? message.to : message.from;
    const c = conversation(peer);
    c.lastAt = Math.max(c.lastAt, message.sent_at);
    const open = state.open && state.open.toLowerCase() === peer.toLowerCase();
    if (open) {
      appendMessage(message);
      if (document.hidden) c.unread += 1;
      else markShownRead();
    } else if (message.status !== "read") {
      c.unread += 1;
    }
    save();
    renderConversations();
  } else if (event.type === "receipt") {
    setReceipt(event.id, event.status);
  } else if (event.type === "session_ended") {
    sessionOver(`Your session ended: ${event.message}.`);
  }
}

// ---- Wiring the page. ----

function wire() {
  api.onEvent = onEvent;
  api.onOpen = () => {
    setStatus();
    subscribe();
  };
  api.onClose = () => {
    state.subscribed = false;
    setStatus();
  };

  $("auth-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("auth-error").textContent = "";
    try {
      await login($("username").value.trim(), $("password").value);
    } catch (error) {
      $("auth-error").textContent = describe(error);
    }
  });

  $("create").addEventListener("click", async () => {
    const form = $("auth-form");
    if (!form.reportValidity()) return;
    $("auth-error").textContent = "";
    const username = $("username").value.trim();
    const password = $("password").value;
    try {
      await api.call("create_account", {
        username,
        password,
        display_name: $("display-name").value,
      });
      await login(username, password);
    } catch (error) {
      $("auth-error").textContent = describe(error);
    }
  });

  $("logout").addEventListener("click", async () => {
    try {
      await api.call("logout", { token: state.session.token });
    } catch {
      // Logged out here whatever the server said.
    }
    sessionOver("");
  });

  $("delete-account").addEventListener("click", () => {
    $("delete-warning").textContent = "";
    $("delete-password").value = "";
    $("delete-confirm").dataset.force = "";
    $("delete-confirm").textContent = "Delete account";
    $("delete-dialog").showModal();
  });
  $("delete-cancel").addEventListener("click", () => $("delete-dialog").close());
  $("delete-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const force = $("delete-confirm").dataset.force === "yes";
    try {
      await api.call("delete_account", {
        token: state.session.token,
        password: $("delete-password").value,
        force,
      });
      $("delete-dialog").close();
      sessionOver("Your account was deleted.");
    } catch (error) {
      if (error.name === "unread_messages") {
        $("delete-warning").textContent =
          `You have ${error.detail} unread message(s); they will be lost. Delete anyway?`;
        $("delete-confirm").dataset.force = "yes";
        $("delete-confirm").textContent = "Delete anyway";
      } else {
        $("delete-warning").textContent = describe(error);
      }
    }
  });

  $("search-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("search").value.trim();
    const pattern = text === "" ? "*" : /[*?]/.test(text) ? text : `*${text}*`;
    $("search-error").textContent = "";
    try {
      const page = await api.call("list_accounts", { token: state.session.token, pattern, limit: 20 });
      const items = page.accounts
        .filter((a) => a.username.toLowerCase() !== state.session.username.toLowerCase())
        .map((a) => {
          const item = element("li");
          const button = element("button");
          button.type = "button";
          button.dataset.peer = a.username;
          const label = a.display_name ? `${a.username} (${a.display_name})` : a.username;
          button.append(element("span", "name", label));
          if (a.online) button.append(element("span", "online-dot", "online"));
          button.addEventListener("click", () => {
            $("search-results").replaceChildren();
            $("search").value = "";
            openConversation(a.username);
          });
          item.append(button);
          return item;
        });
      $("search-results").replaceChildren(...items);
      if (items.length === 0) $("search-error").textContent = "nobody matches";
    } catch (error) {
      $("search-error").textContent = describe(error);
    }
  });

  $("composer").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer-form").requestSubmit();
    }
  });
  $("composer-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("composer").value;
    if (text.trim() === "" || !state.open) return;
    $("composer").value = "";
    $("send-error").textContent = "";
    send(state.open, text);
  });

  $("older").addEventListener("click", () => loadHistory(true));
  $("scroller").addEventListener("scroll", () => {
    if ($("scroller").scrollTop === 0 && state.nextBefore !== null) loadHistory(true);
  });
  $("back").addEventListener("click", () => {
    closeConversation();
    renderConversations();
  });
  document.addEventListener("visibilitychange", () => markShownRead());
}

wire();
restore();
showView();
if (!state.session) $("username").focus();
api.connect();
