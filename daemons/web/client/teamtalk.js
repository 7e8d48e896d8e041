// The TeamTalk protocol for browsers: PDUs over a WebSocket (one binary
// message per PDU, docs/protocol.md "WebSocket (browsers)"), protobuf
// bodies from our own .proto files (parsed at run time by protobuf.js),
// TeamTalk's message text encoding, heartbeats, requests matched by seq,
// and reconnects with backoff. No DOM here: app.js draws the page.

import { ecb } from "./vendor/noble-ciphers/aes.js";
import { md5 } from "./vendor/noble-hashes/legacy.js";

/* global protobuf */

// Command ids (service id is the high byte) and their protobuf types.
export const CMD = {
  LOGIN_REQ: 0x0103,
  LOGIN_RES: 0x0104,
  LOGOUT_REQ: 0x0105,
  LOGOUT_RES: 0x0106,
  KICK_USER: 0x0107,
  RECENT_REQ: 0x0201,
  RECENT_RES: 0x0202,
  STATUS_NOTIFY: 0x0203,
  USERS_INFO_REQ: 0x0204,
  USERS_INFO_RES: 0x0205,
  ALL_USER_REQ: 0x0208,
  ALL_USER_RES: 0x0209,
  USERS_STAT_REQ: 0x020a,
  USERS_STAT_RES: 0x020b,
  PC_LOGIN_NOTIFY: 0x020e,
  MSG_DATA: 0x0301,
  MSG_DATA_ACK: 0x0302,
  MSG_READ_ACK: 0x0303,
  MSG_READ_NOTIFY: 0x0304,
  UNREAD_REQ: 0x0307,
  UNREAD_RES: 0x0308,
  LIST_REQ: 0x0309,
  LIST_RES: 0x030a,
  GROUP_LIST_REQ: 0x0401,
  GROUP_LIST_RES: 0x0402,
  GROUP_INFO_REQ: 0x0403,
  GROUP_INFO_RES: 0x0404,
  GROUP_CREATE_REQ: 0x0405,
  GROUP_CREATE_RES: 0x0406,
  GROUP_CHANGE_NOTIFY: 0x040b,
  HEARTBEAT: 0x0701,
  REQUEST_FAILED: 0x0790,
};

const TYPES = {
  [CMD.LOGIN_REQ]: "IM.Login.IMLoginReq",
  [CMD.LOGIN_RES]: "IM.Login.IMLoginRes",
  [CMD.LOGOUT_REQ]: "IM.Login.IMLogoutReq",
  [CMD.LOGOUT_RES]: "IM.Login.IMLogoutRsp",
  [CMD.KICK_USER]: "IM.Login.IMKickUser",
  [CMD.RECENT_REQ]: "IM.Buddy.IMRecentContactSessionReq",
  [CMD.RECENT_RES]: "IM.Buddy.IMRecentContactSessionRsp",
  [CMD.STATUS_NOTIFY]: "IM.Buddy.IMUserStatNotify",
  [CMD.USERS_INFO_REQ]: "IM.Buddy.IMUsersInfoReq",
  [CMD.USERS_INFO_RES]: "IM.Buddy.IMUsersInfoRsp",
  [CMD.ALL_USER_REQ]: "IM.Buddy.IMAllUserReq",
  [CMD.ALL_USER_RES]: "IM.Buddy.IMAllUserRsp",
  [CMD.USERS_STAT_REQ]: "IM.Buddy.IMUsersStatReq",
  [CMD.USERS_STAT_RES]: "IM.Buddy.IMUsersStatRsp",
  [CMD.PC_LOGIN_NOTIFY]: "IM.Buddy.IMPCLoginStatusNotify",
  [CMD.MSG_DATA]: "IM.Message.IMMsgData",
  [CMD.MSG_DATA_ACK]: "IM.Message.IMMsgDataAck",
  [CMD.MSG_READ_ACK]: "IM.Message.IMMsgDataReadAck",
  [CMD.MSG_READ_NOTIFY]: "IM.Message.IMMsgDataReadNotify",
  [CMD.UNREAD_REQ]: "IM.Message.IMUnreadMsgCntReq",
  [CMD.UNREAD_RES]: "IM.Message.IMUnreadMsgCntRsp",
  [CMD.LIST_REQ]: "IM.Message.IMGetMsgListReq",
  [CMD.LIST_RES]: "IM.Message.IMGetMsgListRsp",
  [CMD.GROUP_LIST_REQ]: "IM.Group.IMNormalGroupListReq",
  [CMD.GROUP_LIST_RES]: "IM.Group.IMNormalGroupListRsp",
  [CMD.GROUP_INFO_REQ]: "IM.Group.IMGroupInfoListReq",
  [CMD.GROUP_INFO_RES]: "IM.Group.IMGroupInfoListRsp",
  [CMD.GROUP_CREATE_REQ]: "IM.Group.IMGroupCreateReq",
  [CMD.GROUP_CREATE_RES]: "IM.Group.IMGroupCreateRsp",
  [CMD.GROUP_CHANGE_NOTIFY]: "IM.Group.IMGroupChangeMemberNotify",
  [CMD.HEARTBEAT]: "IM.Other.IMHeartBeat",
  [CMD.REQUEST_FAILED]: "IM.Ext.IMRequestFailed",
};

// Values of the IM.BaseDefine enums the client uses.
export const SESSION_SINGLE = 1;
export const SESSION_GROUP = 2;
export const MSG_SINGLE_TEXT = 0x01;
export const MSG_SINGLE_AUDIO = 0x02;
export const MSG_GROUP_TEXT = 0x11;
export const MSG_GROUP_AUDIO = 0x12;
export const STATUS_ONLINE = 1;
export const STATUS_OFFLINE = 2;
export const STATUS_LEAVE = 3;
/** A browser is a PC client: one per user, beside one phone. */
const CLIENT_TYPE_WINDOWS = 0x01;
const CLIENT_VERSION = "teamtalk-rs web 0.1";
/** REFUSE_REASON_DB_VALIDATE_FAILED: a wrong name or password. */
const RESULT_BAD_PASSWORD = 6;

/** The PDU header: length, version, flag, service, command, seq, reserved. */
const HEADER_LEN = 16;
const PDU_VERSION = 1;
/** The server's PDU limit (1 MiB): larger messages close the connection. */
export const MAX_PDU = 1 << 20;

/** TeamTalk's shared text key (`aesKey` of the stock deployment). */
export const DEFAULT_AES_KEY = "12345678901234567890123456789012";

// Timers, in milliseconds.
const HEARTBEAT_EVERY = 30_000;
/** The server echoes heartbeats: this long without a byte means the link is dead. */
const SILENCE_LIMIT = 75_000;
const REQUEST_TIMEOUT = 15_000;
const BACKOFF_FIRST = 1_000;
const BACKOFF_MAX = 30_000;

/** Image markers TeamTalk clients put around an image URL in a text message. */
export const IMAGE_START = "&$#@~^@[{:";
export const IMAGE_END = ":}]&$~@#@";

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder("utf-8", { fatal: true });

function base64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

function unbase64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** md5 hex of the password: what TeamTalk clients send at login. */
export function passwordHash(password) {
  return Array.from(md5(utf8.encode(password)), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * TeamTalk's message text encoding: the UTF-8 text zero-padded to whole
 * 16-byte blocks with its length in the last four bytes (big-endian),
 * AES-256-ECB under the deployment key, base64. Returns the bytes of the
 * base64 text, as they go into `msg_data`.
 */
export function encodeText(text, key = DEFAULT_AES_KEY) {
  const plain = utf8.encode(text);
  let blocks = Math.ceil(plain.length / 16);
  const rem = plain.length % 16;
  if (rem === 0 || rem > 12) blocks += 1;
  const data = new Uint8Array(blocks * 16);
  data.set(plain);
  new DataView(data.buffer).setUint32(data.length - 4, plain.length);
  const sealed = ecb(utf8.encode(key), { disablePadding: true }).encrypt(data);
  return utf8.encode(base64(sealed));
}

/** The text in a `msg_data` TeamTalk clients sent; null when it is not in that form. */
export function decodeText(bytes, key = DEFAULT_AES_KEY) {
  try {
    const data = unbase64(fromUtf8.decode(bytes).trim());
    if (data.length === 0 || data.length % 16 !== 0) return null;
    const open = ecb(utf8.encode(key), { disablePadding: true }).decrypt(data);
    const len = new DataView(open.buffer, open.byteOffset).getUint32(open.length - 4);
    if (len > open.length - 4) return null;
    return fromUtf8.decode(open.subarray(0, len));
  } catch {
    return null;
  }
}

/** What a message body shows: TeamTalk's text, else the bytes as UTF-8 (plain senders). */
export function bodyText(bytes, key = DEFAULT_AES_KEY) {
  const text = decodeText(bytes, key);
  if (text !== null) return text;
  return new TextDecoder("utf-8").decode(bytes);
}

/**
 * A message text cut into parts: `{text}` and `{image: url}`, as TeamTalk
 * clients embed images (`IMAGE_START url IMAGE_END`, several per message).
 */
export function splitImages(text) {
  const parts = [];
  let rest = text;
  for (;;) {
    const start = rest.indexOf(IMAGE_START);
    if (start < 0) break;
    const end = rest.indexOf(IMAGE_END, start + IMAGE_START.length);
    if (end < 0) break;
    if (start > 0) parts.push({ text: rest.slice(0, start) });
    parts.push({ image: rest.slice(start + IMAGE_START.length, end) });
    rest = rest.slice(end + IMAGE_END.length);
  }
  if (rest.length > 0 || parts.length === 0) parts.push({ text: rest });
  return parts;
}

/** The text of an image message. */
export function imageText(url) {
  return IMAGE_START + url + IMAGE_END;
}

/** Our .proto files, parsed once into one protobuf.js root. */
export async function loadProtos(base = "proto/") {
  const names = [
    "IM.BaseDefine.proto",
    "IM.Login.proto",
    "IM.Buddy.proto",
    "IM.Message.proto",
    "IM.Group.proto",
    "IM.Other.proto",
    "IM.Ext.proto",
  ];
  const root = new protobuf.Root();
  const texts = await Promise.all(
    names.map(async (n) => {
      const r = await fetch(base + n);
      if (!r.ok) throw new Error(`${n}: HTTP ${r.status}`);
      return r.text();
    }),
  );
  for (const t of texts) protobuf.parse(t, root, { keepCase: true });
  root.resolveAll();
  const types = {};
  for (const [cmd, name] of Object.entries(TYPES)) types[cmd] = root.lookupType(name);
  return types;
}

/** A typed error: `kind` is one of "auth", "kicked", "closed", "timeout", "failed", "refused". */
export class TeamTalkError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

/**
 * One user's connection to a TeamTalk system, kept up until `logout()`.
 *
 * Events (`on(name, fn)`): `state` ({state, detail}: "connecting",
 * "online", "waiting", "kicked", "failed", "offline"), `login` (the user
 * info, after every login including reconnects), `message` (a received
 * IMMsgData, already acknowledged), `status` ({user_id, status}),
 * `readNotify`, `groupChange`.
 */
export class Connection {
  /**
   * @param {object} opts `{ user, password, passwordMd5, loginUrl, aesKey }`;
   *   loginUrl is login_server's `/msg_server` (same origin by default).
   */
  constructor(types, opts) {
    this.types = types;
    this.user = opts.user;
    this.md5 = opts.passwordMd5 ?? passwordHash(opts.password);
    this.loginUrl = opts.loginUrl ?? "msg_server?transport=ws";
    this.aesKey = opts.aesKey ?? DEFAULT_AES_KEY;
    this.handlers = {};
    this.pending = new Map();
    this.seq = 0;
    this.ws = null;
    this.me = null;
    this.assignment = null;
    this.state = "offline";
    this.stopped = false;
    this.failures = 0;
    this.timers = {};
    this.lastHeard = 0;
    /** Messages sent but not acknowledged: resent after a reconnect (the server stores a resend once). */
    this.outbox = [];
  }

  on(name, fn) {
    (this.handlers[name] ??= []).push(fn);
  }

  emit(name, value) {
    for (const fn of this.handlers[name] ?? []) {
      try {
        fn(value);
      } catch (e) {
        console.error(`handler for ${name}`, e);
      }
    }
  }

  setState(state, detail = "") {
    this.state = state;
    this.emit("state", { state, detail });
  }

  /** Connects and logs in; resolves with the user info of the first login. */
  start() {
    this.stopped = false;
    return new Promise((resolve, reject) => {
      this.firstLogin = { resolve, reject };
      this.connect();
    });
  }

  async connect() {
    clearTimeout(this.timers.retry);
    if (this.stopped) return;
    this.setState("connecting");
    let url;
    try {
      const r = await fetch(this.loginUrl, { cache: "no-store" });
      const a = await r.json();
      if (a.code !== 0) throw new TeamTalkError("refused", a.msg || `login_server code ${a.code}`);
      url = a.wsPrior || a.wsBackup;
      if (!url) throw new TeamTalkError("refused", "login_server named no WebSocket port");
      this.assignment = a;
    } catch (e) {
      this.retry(`login_server: ${e.message}`);
      return;
    }
    if (this.stopped) return;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      this.retry(`${url}: ${e.message}`);
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => this.opened(ws);
    ws.onmessage = (ev) => this.received(ws, ev.data);
    ws.onclose = (ev) => this.closed(ws, `closed (${ev.code}${ev.reason ? " " + ev.reason : ""})`);
    ws.onerror = () => {};
  }

  async opened(ws) {
    if (ws !== this.ws) return;
    this.lastHeard = Date.now();
    this.timers.heartbeat = setInterval(() => this.beat(ws), HEARTBEAT_EVERY);
    let res;
    try {
      res = await this.request(CMD.LOGIN_REQ, {
        user_name: this.user,
        password: this.md5,
        online_status: STATUS_ONLINE,
        client_type: CLIENT_TYPE_WINDOWS,
        client_version: CLIENT_VERSION,
      });
    } catch (e) {
      ws.close();
      return;
    }
    if (res.result_code !== 0) {
      const text = res.result_string || `login refused (code ${res.result_code})`;
      if (res.result_code === RESULT_BAD_PASSWORD) {
        this.fail("auth", text);
      } else {
        // No db_proxy or route_server yet: the system is starting or failing over.
        ws.close();
      }
      return;
    }
    this.failures = 0;
    this.me = res.user_info;
    this.setState("online");
    if (this.firstLogin) {
      this.firstLogin.resolve(this.me);
      this.firstLogin = null;
    }
    this.emit("login", this.me);
    this.flushOutbox();
  }

  beat(ws) {
    if (ws !== this.ws) return;
    if (Date.now() - this.lastHeard > SILENCE_LIMIT) {
      ws.close();
      this.closed(ws, "server silent");
      return;
    }
    this.send(CMD.HEARTBEAT, {});
  }

  closed(ws, why) {
    if (ws !== this.ws) return;
    this.ws = null;
    clearInterval(this.timers.heartbeat);
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new TeamTalkError("closed", why));
    }
    this.pending.clear();
    if (this.state === "kicked" || this.state === "failed" || this.stopped) return;
    this.retry(why);
  }

  /** Waits and connects again: 1 s doubling to 30 s, with jitter, reset by a login. */
  retry(why) {
    if (this.stopped || this.state === "kicked" || this.state === "failed") return;
    const step = Math.min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** Math.min(this.failures, 5));
    this.failures += 1;
    const wait = Math.round(step / 2 + Math.random() * (step / 2));
    this.setState("waiting", `${why}; retrying in ${Math.ceil(wait / 1000)} s`);
    this.timers.retry = setTimeout(() => this.connect(), wait);
  }

  fail(kind, text) {
    this.setState(kind === "kicked" ? "kicked" : "failed", text);
    if (this.firstLogin) {
      this.firstLogin.reject(new TeamTalkError(kind, text));
      this.firstLogin = null;
    }
    if (this.ws) {
      const ws = this.ws;
      this.closed(ws, text);
      ws.close();
    }
  }

  received(ws, data) {
    if (ws !== this.ws) return;
    this.lastHeard = Date.now();
    if (!(data instanceof ArrayBuffer) || data.byteLength < HEADER_LEN) {
      ws.close();
      return;
    }
    const view = new DataView(data);
    const length = view.getUint32(0);
    const sid = view.getUint16(8);
    const cid = view.getUint16(10);
    const seq = view.getUint16(12);
    if (length !== data.byteLength || cid >> 8 !== sid) {
      ws.close();
      return;
    }
    const type = this.types[cid];
    if (!type) return; // a command this client does not use
    let msg;
    try {
      msg = type.toObject(type.decode(new Uint8Array(data, HEADER_LEN)), {
        defaults: true,
        longs: Number,
        enums: Number,
        bytes: Uint8Array,
      });
    } catch (e) {
      console.warn(`undecodable 0x${cid.toString(16)}`, e);
      return;
    }
    this.dispatch(cid, seq, msg);
  }

  dispatch(cid, seq, msg) {
    const waiting = this.pending.get(seq);
    if (waiting && (waiting.expect === cid || cid === CMD.REQUEST_FAILED)) {
      this.pending.delete(seq);
      clearTimeout(waiting.timer);
      if (cid === CMD.REQUEST_FAILED) {
        waiting.reject(new TeamTalkError("failed", msg.reason || `request failed (${msg.result_code})`));
      } else {
        waiting.resolve(msg);
      }
      return;
    }
    switch (cid) {
      case CMD.HEARTBEAT:
        break;
      case CMD.MSG_DATA:
        // Delivered: the server keeps it unread until a read ack.
        this.send(CMD.MSG_DATA_ACK, {
          user_id: this.me ? this.me.user_id : 0,
          session_id: isGroup(msg.msg_type) ? msg.to_session_id : msg.from_user_id,
          msg_id: msg.msg_id,
          session_type: isGroup(msg.msg_type) ? SESSION_GROUP : SESSION_SINGLE,
        });
        this.emit("message", msg);
        break;
      case CMD.STATUS_NOTIFY:
        if (msg.user_stat) this.emit("status", msg.user_stat);
        break;
      case CMD.MSG_READ_NOTIFY:
        this.emit("readNotify", msg);
        break;
      case CMD.GROUP_CHANGE_NOTIFY:
        this.emit("groupChange", msg);
        break;
      case CMD.KICK_USER:
        this.fail("kicked", "signed in from another window or device");
        break;
      default:
        break;
    }
  }

  /** Sends one PDU; false when not connected. */
  send(cid, body, seq = 0) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    const type = this.types[cid];
    const payload = type.encode(type.fromObject(body)).finish();
    const pdu = new Uint8Array(HEADER_LEN + payload.length);
    if (pdu.length > MAX_PDU) throw new TeamTalkError("refused", "message too large");
    const v = new DataView(pdu.buffer);
    v.setUint32(0, pdu.length);
    v.setUint16(4, PDU_VERSION);
    v.setUint16(6, 0);
    v.setUint16(8, cid >> 8);
    v.setUint16(10, cid);
    v.setUint16(12, seq);
    v.setUint16(14, 0);
    pdu.set(payload, HEADER_LEN);
    ws.send(pdu);
    return true;
  }

  /** Sends a request and resolves with its reply (the command after it, same seq). */
  request(cid, body, timeout = REQUEST_TIMEOUT) {
    return new Promise((resolve, reject) => {
      this.seq = (this.seq % 0xffff) + 1;
      const seq = this.seq;
      if (!this.send(cid, body, seq)) {
        reject(new TeamTalkError("closed", "not connected"));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(seq);
        reject(new TeamTalkError("timeout", `no answer to 0x${cid.toString(16)}`));
      }, timeout);
      this.pending.set(seq, { expect: cid + 1, resolve, reject, timer });
    });
  }

  /** The user's id once logged in. */
  get userId() {
    return this.me ? this.me.user_id : 0;
  }

  /**
   * Sends `text` to a user or group; resolves with the message as stored
   * (its `msg_id` from the ack). Kept and resent across reconnects until
   * acknowledged.
   */
  sendText(sessionType, sessionId, text) {
    const group = sessionType === SESSION_GROUP;
    const msg = {
      from_user_id: this.userId,
      to_session_id: sessionId,
      msg_id: 0,
      create_time: Math.floor(Date.now() / 1000),
      msg_type: group ? MSG_GROUP_TEXT : MSG_SINGLE_TEXT,
      msg_data: encodeText(text, this.aesKey),
    };
    return new Promise((resolve, reject) => {
      const item = { msg, resolve, reject, inFlight: false };
      this.outbox.push(item);
      this.trySend(item);
    });
  }

  async trySend(item) {
    if (item.inFlight || this.state !== "online") return;
    item.inFlight = true;
    try {
      const ack = await this.request(CMD.MSG_DATA, item.msg);
      this.outbox = this.outbox.filter((i) => i !== item);
      if (!ack.msg_id) {
        item.reject(new TeamTalkError("refused", "the server did not store the message"));
        return;
      }
      item.resolve({ ...item.msg, from_user_id: this.userId, msg_id: ack.msg_id });
    } catch (e) {
      item.inFlight = false;
      if (e.kind === "failed") {
        this.outbox = this.outbox.filter((i) => i !== item);
        item.reject(e);
      }
      // closed or timed out: resent after the next login
    }
  }

  flushOutbox() {
    for (const item of this.outbox) this.trySend(item);
  }

  /** Every user of the directory. */
  async users() {
    const r = await this.request(CMD.ALL_USER_REQ, { user_id: this.userId, latest_update_time: 0 });
    return r.user_list;
  }

  /** Presence of `ids`; also subscribes this session to status notifications. */
  async statuses(ids) {
    const r = await this.request(CMD.USERS_STAT_REQ, { user_id: this.userId, user_id_list: ids });
    return r.user_stat_list;
  }

  async recentSessions() {
    const r = await this.request(CMD.RECENT_REQ, { user_id: this.userId, latest_update_time: 0 });
    return r.contact_session_list;
  }

  async unread() {
    const r = await this.request(CMD.UNREAD_REQ, { user_id: this.userId });
    return r.unreadinfo_list;
  }

  /** One page of history, newest first: ids up to `begin` (0: from the latest). */
  async history(sessionType, sessionId, begin, count) {
    const r = await this.request(CMD.LIST_REQ, {
      user_id: this.userId,
      session_type: sessionType,
      session_id: sessionId,
      msg_id_begin: begin,
      msg_cnt: count,
    });
    return r.msg_list;
  }

  /** Marks everything up to `msgId` read (no answer). */
  readAck(sessionType, sessionId, msgId) {
    this.send(CMD.MSG_READ_ACK, {
      user_id: this.userId,
      session_id: sessionId,
      msg_id: msgId,
      session_type: sessionType,
    });
  }

  /**
   * The user's groups with their details: the normal groups the server
   * lists, and `known` ids besides (temporary groups are not in that list;
   * clients learn them from recent sessions and messages, as TeamTalk's do).
   */
  async groups(known = []) {
    const list = await this.request(CMD.GROUP_LIST_REQ, { user_id: this.userId });
    const ids = new Set(list.group_version_list.map((g) => g.group_id));
    for (const id of known) ids.add(id);
    if (ids.size === 0) return [];
    const info = await this.request(CMD.GROUP_INFO_REQ, {
      user_id: this.userId,
      group_version_list: [...ids].map((group_id) => ({ group_id, version: 0 })),
    });
    return info.group_info_list;
  }

  /** Creates a temporary group with `members` (the creator is added by the server). */
  async createGroup(name, members) {
    const r = await this.request(CMD.GROUP_CREATE_REQ, {
      user_id: this.userId,
      group_type: 2,
      group_name: name,
      group_avatar: "",
      member_id_list: members,
    });
    if (r.result_code !== 0) throw new TeamTalkError("refused", `group not created (${r.result_code})`);
    return r.group_id;
  }

  /** Uploads an image to msfs; resolves with its URL. */
  async uploadImage(file) {
    const msfs = this.assignment && (this.assignment.msfsPrior || this.assignment.msfsBackup);
    if (!msfs) throw new TeamTalkError("refused", "this system has no image server");
    const form = new FormData();
    form.append("file0", file, file.name || "image.png");
    const r = await fetch(msfs, { method: "POST", body: form });
    const a = await r.json();
    if (a.error_code !== 0 || !a.url) throw new TeamTalkError("refused", a.error_msg || "upload failed");
    return a.url;
  }

  /** Logs out and stays offline. */
  async logout() {
    this.stopped = true;
    clearTimeout(this.timers.retry);
    if (this.ws && this.state === "online") {
      try {
        await this.request(CMD.LOGOUT_REQ, {}, 3000);
      } catch {
        // closing anyway
      }
    }
    const ws = this.ws;
    if (ws) {
      this.closed(ws, "signed out");
      ws.close();
    }
    this.setState("offline");
  }
}

export function isGroup(msgType) {
  return msgType === MSG_GROUP_TEXT || msgType === MSG_GROUP_AUDIO;
}
