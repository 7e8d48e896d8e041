// The page: sign-in, the sidebar (recent chats, people, groups) and one
// conversation. Everything from the network goes into the page as text
// (textContent) or as a checked http(s) image URL, never as HTML.

import {
  Connection,
  SESSION_GROUP,
  SESSION_SINGLE,
  STATUS_OFFLINE,
  STATUS_ONLINE,
  bodyText,
  imageText,
  isGroup,
  loadProtos,
  passwordHash,
  splitImages,
} from "./teamtalk.js";

const $ = (id) => document.getElementById(id);
const PAGE = 20;
const SAVED = "teamtalk.login";

const state = {
  conn: null,
  me: null,
  users: new Map(),
  status: new Map(),
  groups: new Map(),
  /** key ("u:ID" / "g:ID") → {type, id, updated, preview, unread, latest} */
  sessions: new Map(),
  /** key → {messages: Map<msg_id, msg>, pending: [], oldest, done, loaded} */
  convs: new Map(),
  current: null,
  tab: "chats",
  /** Everything of the latest login is loaded (directory, chats, unread, groups). */
  ready: false,
  /** The system cannot list groups (see loggedIn). */
  noGroups: false,
};

let types = null;

const keyOf = (type, id) => `${type === SESSION_GROUP ? "g" : "u"}:${id}`;
const parseKey = (key) => ({ type: key[0] === "g" ? SESSION_GROUP : SESSION_SINGLE, id: Number(key.slice(2)) });

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) if (c) e.append(c);
  return e;
}

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 4000);
}

function userName(id) {
  const u = state.users.get(id);
  if (!u) return `user ${id}`;
  return u.user_nick_name || u.user_real_name || u.user_domain || `user ${id}`;
}

function sessionName(key) {
  const { type, id } = parseKey(key);
  if (type === SESSION_GROUP) {
    const g = state.groups.get(id);
    return g ? g.group_name || `group ${id}` : `group ${id}`;
  }
  return userName(id);
}

function initials(name) {
  const words = name.trim().split(/\s+/).filter(Boolean);
  const s = words.length > 1 ? words[0][0] + words[1][0] : (words[0] || "?").slice(0, 2);
  return s.toUpperCase();
}

/** A stable colour per id, so people are easy to tell apart. */
function colour(key) {
  let h = 0;
  for (const c of key) h = (h * 31 + c.charCodeAt(0)) % 3600;
  // Spread neighbouring ids (u:2, u:3) far apart on the colour wheel.
  return `hsl(${(h * 47) % 360} 45% 50%)`;
}

function avatar(key, name) {
  const a = el("span", { class: "avatar", text: initials(name) });
  a.style.background = colour(key);
  const { type, id } = parseKey(key);
  if (type === SESSION_GROUP) a.classList.add("group");
  else a.setAttribute("data-status", String(state.status.get(id) ?? STATUS_OFFLINE));
  return a;
}

function when(seconds) {
  if (!seconds) return "";
  const d = new Date(seconds * 1000);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) {
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  return d.toLocaleDateString([], { month: "short", day: "numeric" });
}

/** A one-line preview of a message body. */
function preview(bytes) {
  const text = bodyText(bytes, state.conn.aesKey);
  return splitImages(text)
    .map((p) => (p.image !== undefined ? "[image]" : p.text))
    .join(" ")
    .replace(/\s+/g, " ")
    .trim();
}

/** Only http(s) URLs become images; anything else stays text. */
function safeImageUrl(url) {
  try {
    const u = new URL(url, location.href);
    return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
  } catch {
    return null;
  }
}

// ---- sign-in ---------------------------------------------------------------

async function signIn(user, md5, remember) {
  $("login-error").textContent = "";
  $("signin").disabled = true;
  // Where login_server is: this origin, unless the page was put elsewhere
  // and names it (see README, "Hosting it elsewhere").
  const loginUrl = document.querySelector('meta[name="teamtalk-login"]')?.content || undefined;
  const conn = new Connection(types, { user, passwordMd5: md5, loginUrl });
  state.conn = conn;
  conn.on("state", showConnState);
  conn.on("login", (me) => loggedIn(me).catch((e) => toast(`Loading failed: ${e.message}`)));
  conn.on("message", received);
  conn.on("status", (s) => {
    state.status.set(s.user_id, s.status);
    renderList();
    renderHeader();
  });
  conn.on("groupChange", () => {
    if (!state.noGroups) loadGroups().catch(() => {});
  });
  try {
    await conn.start();
    if (remember) sessionStorage.setItem(SAVED, JSON.stringify({ user, md5 }));
  } catch (e) {
    sessionStorage.removeItem(SAVED);
    conn.logout();
    state.conn = null;
    $("login-error").textContent = e.kind === "auth" ? "Wrong user name or password." : e.message;
    showLogin();
  } finally {
    $("signin").disabled = false;
  }
}

function showLogin() {
  $("main-view").hidden = true;
  $("login-view").hidden = false;
  $("user").focus();
}

function showConnState({ state: s, detail }) {
  const c = $("conn-state");
  const text = {
    connecting: "Connecting…",
    online: "Online",
    waiting: "Reconnecting…",
    kicked: "Signed in elsewhere",
    failed: "Disconnected",
    offline: "Offline",
  }[s];
  c.textContent = text;
  c.title = detail;
  c.className = `conn ${s}`;
  if (s === "kicked") toast("You signed in from another window or device; this one is offline.");
}

async function loggedIn(me) {
  state.ready = false;
  state.me = me;
  $("login-view").hidden = true;
  $("main-view").hidden = false;
  $("me").textContent = me.user_nick_name || me.user_domain || `user ${me.user_id}`;
  const av = $("me-avatar");
  av.textContent = initials($("me").textContent);
  av.style.background = colour(`u:${me.user_id}`);
  const conn = state.conn;
  const users = await conn.users();
  for (const u of users) state.users.set(u.user_id, u);
  state.users.set(me.user_id, me);
  const ids = [...state.users.keys()];
  for (const s of await conn.statuses(ids)) state.status.set(s.user_id, s.status);
  state.status.set(me.user_id, STATUS_ONLINE);
  for (const s of await conn.recentSessions()) {
    const key = keyOf(s.session_type, s.session_id);
    const cur = state.sessions.get(key) || { ...parseKey(key), unread: 0, latest: 0 };
    cur.updated = s.updated_time;
    cur.preview = preview(s.latest_msg_data);
    cur.latest = Math.max(cur.latest, s.latest_msg_id);
    cur.deleted = s.session_status !== 0;
    state.sessions.set(key, cur);
  }
  await loadUnread();
  if (!state.noGroups) {
    // A msg_server whose store has no groups cannot answer the group list
    // and closes the session instead (a list reply cannot say "failed"):
    // then this page stops asking, and the reconnect goes on without.
    await loadGroups().catch((e) => {
      if (e.kind === "closed" || e.kind === "failed") state.noGroups = true;
      console.warn("groups", e);
    });
  }
  renderList();
  state.ready = true;
  // After a reconnect: what arrived meanwhile in the open conversation.
  if (state.current) {
    const conv = state.convs.get(state.current);
    if (conv && conv.loaded) await loadLatest(state.current);
    markRead(state.current);
  }
}

async function loadUnread() {
  const conn = state.conn;
  const list = await conn.unread();
  for (const s of state.sessions.values()) s.unread = 0;
  for (const u of list) {
    const key = keyOf(u.session_type, u.session_id);
    const cur = state.sessions.get(key) || { ...parseKey(key), latest: 0, updated: 0, preview: "" };
    cur.unread = u.unread_cnt;
    cur.latest = Math.max(cur.latest || 0, u.latest_msg_id);
    if (!cur.preview) cur.preview = preview(u.latest_msg_data);
    cur.deleted = false;
    state.sessions.set(key, cur);
  }
  renderUnreadTotal();
}

async function loadGroups(extra = []) {
  const known = new Set(extra);
  for (const id of state.groups.keys()) known.add(id);
  for (const s of state.sessions.values()) if (s.type === SESSION_GROUP) known.add(s.id);
  const groups = await state.conn.groups([...known]);
  state.groups.clear();
  for (const g of groups) state.groups.set(g.group_id, g);
  renderList();
  renderHeader();
}

// ---- messages --------------------------------------------------------------

function conv(key) {
  let c = state.convs.get(key);
  if (!c) {
    c = { messages: new Map(), pending: [], oldest: 0, done: false, loaded: false };
    state.convs.set(key, c);
  }
  return c;
}

/** A received or loaded message as the page keeps it. */
function entry(m) {
  return {
    msg_id: m.msg_id,
    from: m.from_user_id ?? m.from_session_id,
    time: m.create_time,
    text: bodyText(m.msg_data, state.conn.aesKey),
    audio: m.msg_type === 0x02 || m.msg_type === 0x12,
  };
}

function received(m) {
  const me = state.conn.userId;
  const group = isGroup(m.msg_type);
  const peer = group ? m.to_session_id : m.from_user_id === me ? m.to_session_id : m.from_user_id;
  const key = keyOf(group ? SESSION_GROUP : SESSION_SINGLE, peer);
  const c = conv(key);
  if (c.loaded || c.messages.size > 0) c.messages.set(m.msg_id, entry(m));
  const s = state.sessions.get(key) || { ...parseKey(key), unread: 0, latest: 0 };
  s.updated = m.create_time || Math.floor(Date.now() / 1000);
  s.preview = preview(m.msg_data);
  s.latest = Math.max(s.latest || 0, m.msg_id);
  s.deleted = false;
  const reading = key === state.current && document.visibilityState === "visible";
  if (!reading && m.from_user_id !== me) s.unread = (s.unread || 0) + 1;
  state.sessions.set(key, s);
  if (group && !state.groups.has(peer) && !state.noGroups) {
    // Added to a group by someone else: its name and members.
    loadGroups().catch(() => {});
  }
  if (key === state.current) {
    renderMessages(true);
    if (reading) markRead(key);
  }
  renderList();
  renderUnreadTotal();
}

function markRead(key) {
  const s = state.sessions.get(key);
  const c = state.convs.get(key);
  let latest = s ? s.latest || 0 : 0;
  if (c) for (const id of c.messages.keys()) latest = Math.max(latest, id);
  if (!latest || !state.conn || state.conn.state !== "online") return;
  const { type, id } = parseKey(key);
  if (s && s.unread === 0 && s.readUpTo >= latest) return;
  state.conn.readAck(type, id, latest);
  if (s) {
    s.unread = 0;
    s.readUpTo = latest;
  }
  renderList();
  renderUnreadTotal();
}

async function loadLatest(key) {
  const { type, id } = parseKey(key);
  const c = conv(key);
  const page = await state.conn.history(type, id, 0, PAGE);
  for (const m of page) c.messages.set(m.msg_id, entry(m));
  if (!c.loaded) {
    c.oldest = page.length ? Math.min(...page.map((m) => m.msg_id)) : 0;
    c.done = page.length === 0 || c.oldest <= 1;
  }
  c.loaded = true;
  if (key === state.current) renderMessages(true);
}

async function loadOlder() {
  const key = state.current;
  const c = conv(key);
  if (c.done || c.oldest <= 1) return;
  const { type, id } = parseKey(key);
  const box = $("messages");
  const before = box.scrollHeight - box.scrollTop;
  $("older").disabled = true;
  try {
    const page = await state.conn.history(type, id, c.oldest - 1, PAGE);
    for (const m of page) c.messages.set(m.msg_id, entry(m));
    if (page.length === 0) c.done = true;
    else c.oldest = Math.min(c.oldest, ...page.map((m) => m.msg_id));
    if (c.oldest <= 1) c.done = true;
  } catch (e) {
    toast(`History: ${e.message}`);
  } finally {
    $("older").disabled = false;
  }
  if (key === state.current) {
    renderMessages(false);
    box.scrollTop = box.scrollHeight - before;
  }
}

async function open(key) {
  state.current = key;
  const c = conv(key);
  $("main-view").classList.add("in-conversation");
  renderHeader();
  renderMessages(true);
  renderList();
  $("text").focus();
  if (!c.loaded) {
    try {
      await loadLatest(key);
    } catch (e) {
      toast(`History: ${e.message}`);
    }
  }
  markRead(key);
}

async function sendText(text) {
  const key = state.current;
  if (!key || !text.trim()) return;
  const { type, id } = parseKey(key);
  const c = conv(key);
  const local = { msg_id: 0, from: state.conn.userId, time: Math.floor(Date.now() / 1000), text, pending: true };
  c.pending.push(local);
  renderMessages(true);
  try {
    const stored = await state.conn.sendText(type, id, text);
    c.pending = c.pending.filter((p) => p !== local);
    c.messages.set(stored.msg_id, { ...local, msg_id: stored.msg_id, pending: false });
    const s = state.sessions.get(key) || { type, id, unread: 0, latest: 0 };
    s.updated = local.time;
    s.preview = preview(stored.msg_data);
    s.latest = Math.max(s.latest || 0, stored.msg_id);
    s.readUpTo = Math.max(s.readUpTo || 0, stored.msg_id);
    s.deleted = false;
    state.sessions.set(key, s);
  } catch (e) {
    local.failed = e.message;
  }
  if (key === state.current) renderMessages(true);
  renderList();
}

async function sendImage(file) {
  if (!file || !state.current) return;
  if (!file.type.startsWith("image/")) {
    toast("Only images can be sent.");
    return;
  }
  $("attach").disabled = true;
  try {
    const url = await state.conn.uploadImage(file);
    await sendText(imageText(url));
  } catch (e) {
    toast(`Image not sent: ${e.message}`);
  } finally {
    $("attach").disabled = false;
  }
}

// ---- rendering -------------------------------------------------------------

function renderUnreadTotal() {
  let total = 0;
  for (const s of state.sessions.values()) total += s.unread || 0;
  const b = $("total-unread");
  b.textContent = String(total);
  b.hidden = total === 0;
  document.title = total ? `(${total}) TeamTalk` : "TeamTalk";
}

function listItem(key, name, line, extra) {
  const li = el("li", { "data-session": key, title: name });
  if (key === state.current) li.classList.add("active");
  li.append(avatar(key, name), el("div", { class: "who" }, el("span", { class: "name", text: name }), el("span", { class: "preview", text: line })));
  if (extra) li.append(extra);
  li.addEventListener("click", () => open(key));
  return li;
}

function statusText(id) {
  const s = state.status.get(id) ?? STATUS_OFFLINE;
  return s === STATUS_ONLINE ? "online" : s === 3 ? "away" : "offline";
}

function renderList() {
  const list = $("list");
  const filter = $("filter").value.trim().toLowerCase();
  const match = (name) => !filter || name.toLowerCase().includes(filter);
  const items = [];
  if (state.tab === "chats") {
    const sessions = [...state.sessions.entries()]
      .filter(([, s]) => !s.deleted)
      .sort(([, a], [, b]) => (b.updated || 0) - (a.updated || 0));
    for (const [key, s] of sessions) {
      const name = sessionName(key);
      if (!match(name)) continue;
      const side = el("div", { class: "side" }, el("div", { class: "when", text: when(s.updated) }));
      if (s.unread) side.append(el("span", { class: "badge", text: String(s.unread) }));
      items.push(listItem(key, name, s.preview || "", side));
    }
    if (!items.length) items.push(el("li", { class: "none", text: "No conversations yet: pick someone under People." }));
  } else if (state.tab === "people") {
    const me = state.conn ? state.conn.userId : 0;
    const people = [...state.users.values()]
      .filter((u) => u.user_id !== me)
      .sort((a, b) => {
        const on = (u) => (state.status.get(u.user_id) === STATUS_ONLINE ? 0 : 1);
        return on(a) - on(b) || userName(a.user_id).localeCompare(userName(b.user_id));
      });
    for (const u of people) {
      const name = userName(u.user_id);
      if (!match(name)) continue;
      const line = u.sign_info ? `${statusText(u.user_id)} · ${u.sign_info}` : statusText(u.user_id);
      items.push(listItem(keyOf(SESSION_SINGLE, u.user_id), name, line));
    }
    if (!items.length) items.push(el("li", { class: "none", text: "Nobody else here yet." }));
  } else {
    for (const g of [...state.groups.values()].sort((a, b) => a.group_name.localeCompare(b.group_name))) {
      const key = keyOf(SESSION_GROUP, g.group_id);
      if (!match(g.group_name)) continue;
      items.push(listItem(key, g.group_name || `group ${g.group_id}`, `${g.group_member_list.length} members`));
    }
    if (!items.length) {
      const none = state.noGroups ? "This system does not offer groups." : "No groups yet.";
      items.push(el("li", { class: "none", text: none }));
    }
  }
  list.replaceChildren(...items);
  $("new-group").hidden = state.tab !== "groups" || state.noGroups;
}

function renderHeader() {
  const key = state.current;
  const has = Boolean(key);
  $("empty").hidden = has;
  $("conv-header").hidden = !has;
  $("messages").hidden = !has;
  $("composer").hidden = !has;
  if (!has) return;
  const name = sessionName(key);
  $("conv-title").textContent = name;
  const { type, id } = parseKey(key);
  if (type === SESSION_GROUP) {
    const g = state.groups.get(id);
    $("conv-sub").textContent = g ? g.group_member_list.map(userName).join(", ") : "";
  } else {
    $("conv-sub").textContent = statusText(id);
  }
  $("conv-avatar").replaceWith(Object.assign(avatar(key, name), { id: "conv-avatar" }));
  const msfs = state.conn && state.conn.assignment;
  const canImage = Boolean(msfs && (msfs.msfsPrior || msfs.msfsBackup));
  $("attach").disabled = !canImage;
  $("attach").title = canImage ? "Send an image" : "This system has no image server";
}

function messageBody(m) {
  const bubble = el("div", { class: "bubble" });
  if (m.audio) {
    bubble.textContent = "[voice message: open a TeamTalk app to listen]";
    return bubble;
  }
  for (const part of splitImages(m.text)) {
    if (part.image !== undefined) {
      const url = safeImageUrl(part.image);
      if (url) {
        const img = el("img", { src: url, alt: "image", loading: "lazy", referrerPolicy: "no-referrer" });
        img.addEventListener("click", () => window.open(url, "_blank", "noopener"));
        bubble.append(img);
      } else {
        bubble.append(document.createTextNode(part.image));
      }
    } else {
      bubble.append(document.createTextNode(part.text));
    }
  }
  return bubble;
}

function renderMessages(toBottom) {
  const key = state.current;
  if (!key) return;
  const c = conv(key);
  const box = $("messages");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const group = parseKey(key).type === SESSION_GROUP;
  const me = state.conn.userId;
  const all = [...c.messages.values()].sort((a, b) => a.msg_id - b.msg_id).concat(c.pending);
  const nodes = [];
  let lastDay = "";
  for (const m of all) {
    const day = new Date(m.time * 1000).toDateString();
    if (day !== lastDay) {
      nodes.push(el("div", { class: "day", text: new Date(m.time * 1000).toLocaleDateString([], { weekday: "short", month: "short", day: "numeric" }) }));
      lastDay = day;
    }
    const mine = m.from === me;
    const node = el("div", { class: `msg ${mine ? "mine" : "theirs"}`, "data-msg-id": String(m.msg_id) });
    if (m.pending) node.classList.add("pending");
    if (m.failed) node.classList.add("failed");
    if (group && !mine) node.append(el("span", { class: "from", text: userName(m.from) }));
    node.append(messageBody(m));
    const meta = m.failed ? `not sent: ${m.failed}` : m.pending ? "sending…" : when(m.time);
    node.append(el("span", { class: "meta", text: meta }));
    nodes.push(node);
  }
  $("message-list").replaceChildren(...nodes);
  $("older").hidden = !c.loaded || c.done;
  if (toBottom || atBottom) box.scrollTop = box.scrollHeight;
}

// ---- groups ----------------------------------------------------------------

function openGroupDialog() {
  const me = state.conn.userId;
  const items = [...state.users.values()]
    .filter((u) => u.user_id !== me)
    .sort((a, b) => userName(a.user_id).localeCompare(userName(b.user_id)))
    .map((u) =>
      el("li", {}, el("label", {}, el("input", { type: "checkbox", value: String(u.user_id) }), document.createTextNode(userName(u.user_id)))),
    );
  $("group-members").replaceChildren(...items);
  $("group-name").value = "";
  $("group-dialog").showModal();
}

async function createGroup() {
  const name = $("group-name").value.trim();
  const members = [...$("group-members").querySelectorAll("input:checked")].map((i) => Number(i.value));
  if (!name) return;
  try {
    const id = await state.conn.createGroup(name, members);
    await loadGroups([id]);
    open(keyOf(SESSION_GROUP, id));
  } catch (e) {
    toast(`Group not created: ${e.message}`);
  }
}

// ---- wiring ----------------------------------------------------------------

function wire() {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    signIn($("user").value.trim(), passwordHash($("password").value), true);
    $("password").value = "";
  });
  $("signout").addEventListener("click", async () => {
    sessionStorage.removeItem(SAVED);
    if (state.conn) await state.conn.logout();
    location.reload();
  });
  for (const b of document.querySelectorAll(".tabs button")) {
    b.addEventListener("click", () => {
      state.tab = b.dataset.tab;
      for (const o of document.querySelectorAll(".tabs button")) o.classList.toggle("active", o === b);
      renderList();
    });
  }
  $("filter").addEventListener("input", renderList);
  $("older").addEventListener("click", loadOlder);
  $("messages").addEventListener("scroll", () => {
    if ($("messages").scrollTop === 0 && !$("older").hidden) loadOlder();
  });
  $("composer").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = $("text").value;
    $("text").value = "";
    sendText(text);
  });
  $("text").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("text").addEventListener("paste", (ev) => {
    const file = [...(ev.clipboardData?.files ?? [])].find((f) => f.type.startsWith("image/"));
    if (file) {
      ev.preventDefault();
      sendImage(file);
    }
  });
  $("attach").addEventListener("click", () => $("image-file").click());
  $("image-file").addEventListener("change", () => {
    const f = $("image-file").files[0];
    $("image-file").value = "";
    sendImage(f);
  });
  $("back").addEventListener("click", () => {
    state.current = null;
    $("main-view").classList.remove("in-conversation");
    renderHeader();
    renderList();
  });
  $("new-group").addEventListener("click", openGroupDialog);
  $("group-cancel").addEventListener("click", () => $("group-dialog").close());
  $("group-form").addEventListener("submit", () => createGroup());
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && state.current) markRead(state.current);
  });
}

async function main() {
  wire();
  try {
    types = await loadProtos();
  } catch (e) {
    showLogin();
    $("login-error").textContent = `Cannot load the protocol: ${e.message}`;
    return;
  }
  const saved = sessionStorage.getItem(SAVED);
  if (saved) {
    try {
      const { user, md5 } = JSON.parse(saved);
      $("user").value = user;
      $("main-view").hidden = false;
      await signIn(user, md5, true);
      return;
    } catch {
      sessionStorage.removeItem(SAVED);
    }
  }
  showLogin();
}

// For tests and debugging: the page's state (read-only use).
window.teamtalk = state;
main();
