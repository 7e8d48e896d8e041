// TeamTalk admin console: tabs over the admin REST API (/api/...), with
// the admin token as a bearer token. Plain ES module, no build step.
// Every value from the server is put in the page as text, never as HTML.

const PAGE = 50;
const state = {
  token: sessionStorage.getItem("teamtalk-admin-token") || "",
  tab: "overview",
  offset: 0,
  total: 0,
  query: "",
  departments: [],
  users: new Map(),
};

const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text). */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function showError(message) {
  const e = $("error");
  e.textContent = message;
  e.hidden = !message;
}

/** Calls the API; resolves with the parsed JSON (null for 204), or throws
 *  an Error carrying the server's message. */
async function api(method, path, body) {
  const headers = {};
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 204) return null;
  const type = res.headers.get("content-type") || "";
  const data = type.includes("json") ? await res.json() : await res.text();
  if (!res.ok) {
    const msg = typeof data === "object" && data && data.message ? data.message : String(data).trim();
    throw new Error(`${res.status}: ${msg || res.statusText}`);
  }
  return data;
}

/** Runs an action, showing its error in the banner; refreshes the tab. */
async function act(fn) {
  try {
    await fn();
    showError("");
  } catch (e) {
    showError(e.message);
  }
  await refresh();
}

// ---- dialog -------------------------------------------------------------

/** Opens the dialog with `fields` ([name, label, value, type]); resolves
 *  with the values by name, or null when cancelled. */
function ask(title, fields, okText = "Save") {
  const dialog = $("dialog");
  $("dialog-title").textContent = title;
  const body = $("dialog-body");
  body.replaceChildren();
  for (const f of fields) {
    if (f.node) {
      body.append(f.node);
      continue;
    }
    const input = f.options
      ? el("select", { name: f.name }, f.options.map(([v, t]) => el("option", { value: v, selected: String(v) === String(f.value) }, t)))
      : el("input", { name: f.name, type: f.type || "text", value: f.value ?? "", autocomplete: "off" });
    body.append(el("label", {}, f.label, input));
  }
  $("dialog-ok").textContent = okText;
  $("dialog-ok").hidden = okText === null;
  return new Promise((resolve) => {
    const cancel = $("dialog-cancel");
    const done = (ok) => {
      cancel.onclick = null;
      dialog.onclose = null;
      const values = {};
      for (const i of body.querySelectorAll("input, select")) values[i.name] = i.value;
      if (dialog.open) dialog.close();
      resolve(ok ? values : null);
    };
    cancel.onclick = () => done(false);
    dialog.onclose = () => done(dialog.returnValue === "ok");
    dialog.returnValue = "";
    dialog.showModal();
  });
}

// ---- overview -------------------------------------------------------------

/** Sums the samples of `name` in Prometheus text, optionally filtered by a
 *  label substring. */
function metric(text, name, filter = "") {
  let sum = 0;
  let seen = false;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== " " && rest[0] !== "{") continue;
    if (filter && !rest.includes(filter)) continue;
    const v = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (!Number.isNaN(v)) {
      sum += v;
      seen = true;
    }
  }
  return seen ? sum : null;
}

async function loadHealth() {
  const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
  const res = await fetch("/healthz", { headers });
  const text = await res.text();
  const ok = res.status === 200;
  const badge = $("health");
  badge.textContent = ok ? "healthy" : res.status === 401 ? "token needed" : "unhealthy";
  badge.className = `health ${ok ? "ok" : "bad"}`;
  $("ov-health").textContent = ok ? "ok" : `${res.status}`;
  const problems = ok ? [] : text.split("\n").slice(1).filter(Boolean);
  $("ov-problems").replaceChildren(...problems.map((p) => el("li", {}, p)));
}

async function loadOverview() {
  await loadHealth();
  const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
  const res = await fetch("/metrics", { headers });
  if (!res.ok) return;
  const text = await res.text();
  const show = (id, v) => ($(id).textContent = v === null ? "–" : v.toLocaleString());
  show("ov-online", metric(text, "teamtalk_route_users_online"));
  show("ov-sessions", metric(text, "teamtalk_msg_logged_in_sessions"));
  show("ov-stored", metric(text, "teamtalk_db_messages_stored_total"));
  const ok = metric(text, "teamtalk_msg_logins_ok_total");
  const refused = metric(text, "teamtalk_msg_logins_refused_total");
  $("ov-logins").textContent = ok === null ? "–" : `${ok} / ${refused ?? 0}`;
  show("ov-msgservers", metric(text, "teamtalk_login_msg_servers"));
}

// ---- departments ------------------------------------------------------------

function deptName(id) {
  if (!id) return "–";
  const d = state.departments.find((d) => d.id === id);
  return d ? d.name : `#${id}`;
}

function deptOptions(none = "no department") {
  return [[0, none], ...state.departments.map((d) => [d.id, d.name])];
}

async function loadDepartments() {
  state.departments = await api("GET", "/api/departments");
  for (const select of document.querySelectorAll(".dept-select")) {
    const keep = select.value;
    const none = select.name === "parent_id" ? "no parent" : "no department";
    select.replaceChildren(...deptOptions(none).map(([v, t]) => el("option", { value: v }, t)));
    if (keep) select.value = keep;
  }
}

async function renderDepartments() {
  const page = await api("GET", `/api/users?limit=1000`);
  const counts = new Map();
  for (const u of page.users) counts.set(u.dept_id, (counts.get(u.dept_id) || 0) + 1);
  $("departments").replaceChildren(
    ...state.departments.map((d) =>
      el("tr", { "data-id": d.id },
        el("td", {}, d.id),
        el("td", {}, d.name),
        el("td", {}, deptName(d.parent_id)),
        el("td", {}, counts.get(d.id) || 0),
        el("td", { class: "actions" },
          el("button", { class: "secondary small", onclick: () => renameDept(d) }, "Rename"),
          el("button", { class: "danger small", onclick: () => deleteDept(d) }, "Delete")))),
  );
}

async function renameDept(d) {
  const v = await ask(`Rename ${d.name}`, [{ name: "name", label: "Name", value: d.name }]);
  if (v) await act(() => api("PATCH", `/api/departments/${d.id}`, { name: v.name }));
}

async function deleteDept(d) {
  if (confirm(`Delete department ${d.name}?`)) await act(() => api("DELETE", `/api/departments/${d.id}`));
}

// ---- users -------------------------------------------------------------------

function statusPill(u) {
  return u.disabled ? el("span", { class: "pill off" }, "disabled") : el("span", { class: "pill" }, "active");
}

async function renderUsers() {
  const q = state.query ? `&q=${encodeURIComponent(state.query)}` : "";
  const page = await api("GET", `/api/users?offset=${state.offset}&limit=${PAGE}${q}`);
  state.total = page.total;
  for (const u of page.users) state.users.set(u.id, u);
  const last = Math.min(page.offset + page.users.length, page.total);
  $("user-count").textContent = page.total ? `${page.offset + 1}–${last} of ${page.total}` : "no users";
  $("user-prev").disabled = page.offset === 0;
  $("user-next").disabled = last >= page.total;
  const rows = page.users.map((u) => {
    const sessions = el("td", { class: "sessions" }, "…");
    api("GET", `/api/users/${u.id}/sessions`).then(
      (list) => sessions.replaceChildren(list.length ? el("span", { class: "pill online" }, list.map((s) => s.client).join(", ")) : "offline"),
      () => sessions.replaceChildren("?"),
    );
    return el("tr", { "data-id": u.id, "data-name": u.name },
      el("td", {}, u.id),
      el("td", {}, u.name),
      el("td", {}, u.nick),
      el("td", {}, deptName(u.dept_id)),
      el("td", {}, statusPill(u)),
      sessions,
      el("td", { class: "actions" },
        el("button", { class: "secondary small", onclick: () => editUser(u) }, "Edit"),
        el("button", { class: "secondary small", onclick: () => setPassword(u) }, "Password"),
        el("button", { class: "secondary small", onclick: () => showSessions(u) }, "Sessions"),
        u.disabled
          ? el("button", { class: "secondary small", onclick: () => act(() => api("POST", `/api/users/${u.id}/enable`)) }, "Enable")
          : el("button", { class: "danger small", onclick: () => act(() => api("POST", `/api/users/${u.id}/disable`)) }, "Disable"),
        el("button", { class: "danger small", onclick: () => deleteUser(u) }, "Delete")));
  });
  $("users").replaceChildren(...rows);
}

async function editUser(u) {
  const v = await ask(`Edit ${u.name}`, [
    { name: "nick", label: "Nick", value: u.nick },
    { name: "dept_id", label: "Department", value: u.dept_id, options: deptOptions() },
    { name: "email", label: "E-mail", value: u.email },
    { name: "phone", label: "Phone", value: u.phone },
  ]);
  if (v) await act(() => api("PATCH", `/api/users/${u.id}`, { nick: v.nick, dept_id: Number(v.dept_id), email: v.email, phone: v.phone }));
}

async function setPassword(u) {
  const v = await ask(`New password for ${u.name}`, [{ name: "password", label: "Password", type: "password" }]);
  if (v) await act(() => api("PUT", `/api/users/${u.id}/password`, { password: v.password }));
}

async function showSessions(u) {
  const list = await api("GET", `/api/users/${u.id}/sessions`).catch((e) => (showError(e.message), []));
  const table = list.length
    ? el("table", { class: "grid" },
        el("tr", {}, el("th", {}, "client"), el("th", {}, "msg_server"), el("th", {}, "address")),
        list.map((s) => el("tr", {}, el("td", {}, s.client), el("td", {}, s.server), el("td", {}, s.addr || "–"))))
    : el("p", { class: "hint" }, "Not online.");
  const v = await ask(`Sessions of ${u.name}`, [{ node: table }], list.length ? "Kick all" : null);
  if (v) await act(() => api("DELETE", `/api/users/${u.id}/sessions`));
}

async function deleteUser(u) {
  if (confirm(`Delete user ${u.name}? Their sessions are kicked.`)) await act(() => api("DELETE", `/api/users/${u.id}`));
}

// ---- groups ------------------------------------------------------------------

/** A user named by id or login name, as an id. */
async function userId(text) {
  const t = text.trim();
  if (/^\d+$/.test(t)) return Number(t);
  const page = await api("GET", `/api/users?name=${encodeURIComponent(t)}`);
  if (!page.users.length) throw new Error(`no user named ${t}`);
  return page.users[0].id;
}

function userLabel(id) {
  const u = state.users.get(id);
  return u ? u.name : `#${id}`;
}

async function renderGroups() {
  const [groups, users] = await Promise.all([api("GET", "/api/groups"), api("GET", "/api/users?limit=1000")]);
  for (const u of users.users) state.users.set(u.id, u);
  $("groups").replaceChildren(
    ...groups.map((g) =>
      el("tr", { "data-id": g.id },
        el("td", {}, g.id),
        el("td", {}, g.name),
        el("td", {}, g.type),
        el("td", {}, g.members.map(userLabel).join(", ")),
        el("td", { class: "actions" },
          el("button", { class: "secondary small", onclick: () => addMembers(g) }, "Add"),
          el("button", { class: "secondary small", onclick: () => removeMember(g) }, "Remove"),
          el("button", { class: "danger small", onclick: () => deleteGroup(g) }, "Delete")))),
  );
}

async function addMembers(g) {
  const v = await ask(`Add to ${g.name}`, [{ name: "users", label: "Users (names or ids, comma separated)" }], "Add");
  if (!v) return;
  await act(async () => {
    const ids = await Promise.all(v.users.split(",").filter((s) => s.trim()).map(userId));
    await api("POST", `/api/groups/${g.id}/members`, { users: ids });
  });
}

async function removeMember(g) {
  const v = await ask(`Remove from ${g.name}`, [{ name: "user", label: "Member", options: g.members.map((m) => [m, userLabel(m)]) }], "Remove");
  if (v) await act(() => api("DELETE", `/api/groups/${g.id}/members/${v.user}`));
}

async function deleteGroup(g) {
  if (confirm(`Delete group ${g.name}? Its members are told.`)) await act(() => api("DELETE", `/api/groups/${g.id}`));
}

// ---- wiring ------------------------------------------------------------------

async function refresh() {
  try {
    loadHealth().catch(() => {});
    if (state.tab === "overview") return await loadOverview();
    await loadDepartments();
    if (state.tab === "users") await renderUsers();
    if (state.tab === "departments") await renderDepartments();
    if (state.tab === "groups") await renderGroups();
  } catch (e) {
    showError(e.message);
  }
}

function selectTab(tab) {
  state.tab = tab;
  for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b.dataset.tab === tab);
  for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== `tab-${tab}`;
  refresh();
}

function formValues(form) {
  return Object.fromEntries(new FormData(form).entries());
}

function init() {
  $("token").value = state.token;
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem("teamtalk-admin-token", state.token);
    showError("");
    refresh();
  });
  for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => selectTab(b.dataset.tab));
  $("user-create").addEventListener("submit", (e) => {
    e.preventDefault();
    const v = formValues(e.target);
    const body = { name: v.name, password: v.password, dept_id: Number(v.dept_id || 0) };
    if (v.nick) body.nick = v.nick;
    act(async () => {
      await api("POST", "/api/users", body);
      e.target.reset();
    });
  });
  $("dept-create").addEventListener("submit", (e) => {
    e.preventDefault();
    const v = formValues(e.target);
    act(async () => {
      await api("POST", "/api/departments", { name: v.name, parent_id: Number(v.parent_id || 0) });
      e.target.reset();
    });
  });
  $("group-create").addEventListener("submit", (e) => {
    e.preventDefault();
    const v = formValues(e.target);
    act(async () => {
      const creator = await userId(v.creator);
      const members = await Promise.all(v.members.split(",").filter((s) => s.trim()).map(userId));
      await api("POST", "/api/groups", { name: v.name, creator, members });
      e.target.reset();
    });
  });
  let typing;
  $("user-search").addEventListener("input", (e) => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      state.query = e.target.value.trim();
      state.offset = 0;
      refresh();
    }, 250);
  });
  $("user-prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE);
    refresh();
  });
  $("user-next").addEventListener("click", () => {
    state.offset += PAGE;
    refresh();
  });
  setInterval(() => {
    if (state.tab === "overview") refresh();
    else loadHealth().catch(() => {});
  }, 5000);
  selectTab(location.hash.slice(1) || "overview");
}

init();
