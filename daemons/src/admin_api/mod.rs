//! The admin REST API: users, departments, groups and online sessions,
//! JSON in and out, on the admin port beside `/metrics` and `/healthz`.
//!
//! [`AdminApi::handle`] answers one request. It runs on the admin
//! endpoint's worker thread (store calls block), never on an App thread.
//! What it changes takes effect at once:
//!
//! - the store is written before the answer (one durable transaction per
//!   call);
//! - a disabled or deleted user's sessions are kicked, through the
//!   [`Cluster`] (the msg_servers);
//! - a password change needs nothing more: db_proxy's credential cache
//!   re-reads the stored credential's stamp on every hit, so a login with
//!   the old password is refused at once, in this process or another;
//! - group changes are announced to the members online
//!   (`IMGroupChangeMemberNotify`, 0x040b) as a client's own change is.
//!
//! Which process serves it: under `teamtalk up`, the system's admin
//! endpoint, which holds the store and the msg_servers in-process
//! ([`crate::system`]); with separate daemons, db_proxy_server's admin
//! port, which holds the store and sends kicks and group notices to the
//! msg_servers on their db links (every msg_server links to the one
//! db_proxy_server serving a store). See `docs/admin-api.md`.
//!
//! Requests: bodies are JSON (`Content-Type: application/json`), at most
//! [`MAX_BODY`] bytes, unknown fields refused; every error is the shared
//! JSON error body (`{"status", "error", "message"}`) with its status. A
//! request carrying an `Origin` other than the admin port's own is
//! refused (403), so a web page elsewhere cannot drive the API through a
//! browser on the operator's machine.

mod cluster;
mod console;
mod openapi;
mod types;

use std::sync::Arc;

use ::http::header::{HOST, ORIGIN};
use ::http::{Method, StatusCode};
use serde::Serialize;
use teamtalk_proto::pb::im::group::ImGroupChangeMemberNotify;
use tracing::{info, warn};

pub use cluster::{DbProxyLinks, MsgServers};
pub use console::Console;
pub use openapi::openapi;
pub use types::{
    ApiDepartment, ApiGroup, ApiUser, DepartmentCreate, DepartmentRename, GroupCreate,
    MAX_LONG_TEXT, MAX_TEXT, MembersBody, OnlineSession, PasswordBody, UserCreate, UserPage,
    UserUpdateBody, ValidationError, client_name,
};

use crate::http::{self, JsonError, Route, parse_json};
use crate::password::md5_hex;
use crate::runtime::{Request, Response};
use crate::store::{
    Actor, DeptId, GroupId, GroupType, MemberChange, NewGroup, Store, StoreError,
    USER_STATUS_DEPARTED, UserId, UserUpdate,
};

/// Largest request body: a group of [`MAX_GROUP_MEMBERS`] ids fits.
///
/// [`MAX_GROUP_MEMBERS`]: crate::store::MAX_GROUP_MEMBERS
pub const MAX_BODY: usize = 128 * 1024;
/// Page size of `GET /api/users` when none is asked.
pub const DEFAULT_PAGE: usize = 100;
/// Largest page of `GET /api/users`.
pub const MAX_PAGE: usize = 1000;

/// Why the cluster could not act.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// No msg_server could be reached (stopped, or not answering in time).
    #[error("msg_servers unavailable: {0}")]
    Unavailable(String),
    /// This process cannot do it.
    #[error("{0}")]
    Unsupported(&'static str),
}

/// What the API needs of the running msg_servers.
pub trait Cluster: Send + Sync {
    /// The sessions `user` has online, on every msg_server.
    ///
    /// # Errors
    /// [`ClusterError`] when the sessions cannot be known.
    fn sessions(&self, user: UserId) -> Result<Vec<OnlineSession>, ClusterError>;
    /// Kicks every session of `user`; how many there were, when known.
    ///
    /// # Errors
    /// [`ClusterError`] when the msg_servers cannot be told.
    fn kick(&self, user: UserId) -> Result<Option<u32>, ClusterError>;
    /// Announces a group change to the members online.
    ///
    /// # Errors
    /// [`ClusterError`] when the msg_servers cannot be told.
    fn announce(&self, notify: ImGroupChangeMemberNotify) -> Result<(), ClusterError>;
}

/// An API error: a status and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, what)
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn response(&self) -> Response {
        http::error(self.status, &self.message)
    }
}

impl From<JsonError> for ApiError {
    fn from(e: JsonError) -> Self {
        Self::new(e.status(), e.to_string())
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::NameTaken(_)
            | StoreError::DeptNameTaken(_)
            | StoreError::DeptNotEmpty { .. } => StatusCode::CONFLICT,
            StoreError::NoSuchUser(_) | StoreError::NoSuchGroup(_) => StatusCode::NOT_FOUND,
            StoreError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            e if e.is_refusal() => StatusCode::UNPROCESSABLE_ENTITY,
            e => {
                warn!(error = %e, "admin API: store failed");
                return Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the store failed; see the log",
                );
            }
        };
        Self::new(status, e.to_string())
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        let status = match e {
            ClusterError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            ClusterError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, e.to_string())
    }
}

type ApiResult = Result<Response, ApiError>;

/// The admin API over a store and the msg_servers. See the
/// [module docs](self).
pub struct AdminApi {
    store: Arc<dyn Store>,
    cluster: Arc<dyn Cluster>,
}

impl std::fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminApi").finish_non_exhaustive()
    }
}

fn ok<T: Serialize + ?Sized>(value: &T) -> ApiResult {
    Ok(http::json(StatusCode::OK, value))
}

fn created<T: Serialize + ?Sized>(value: &T) -> ApiResult {
    Ok(http::json(StatusCode::CREATED, value))
}

fn no_content() -> ApiResult {
    Ok(http::empty(StatusCode::NO_CONTENT))
}

/// A path segment that must be an id.
fn id(segment: &str, what: &str) -> Result<u32, ApiError> {
    segment
        .parse::<u32>()
        .ok()
        .filter(|&id| id != 0)
        .ok_or_else(|| ApiError::not_found(&format!("no {what} {segment:?}")))
}

/// A query parameter that must be a number, `default` when absent.
fn number(route: &Route, name: &str, default: usize) -> Result<usize, ApiError> {
    match route.query(name) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::bad(format!("{name} must be a number"))),
    }
}

fn methods(allowed: &[Method]) -> ApiResult {
    Ok(http::method_not_allowed(allowed))
}

/// Whether a request's `Origin` (if any) is the admin port's own: the
/// console's requests carry it, other pages' must not pass.
fn same_origin(request: &Request) -> bool {
    let Some(origin) = request.headers().get(ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(Ok(host))) = (
        origin.to_str(),
        request.headers().get(HOST).map(|h| h.to_str()),
    ) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

/// A JSON body, which must say it is JSON.
fn body<T: serde::de::DeserializeOwned>(request: &Request) -> Result<T, ApiError> {
    if request
        .headers()
        .get(::http::header::CONTENT_TYPE)
        .is_none()
    {
        return Err(JsonError::ContentType.into());
    }
    Ok(parse_json(request, MAX_BODY)?)
}

impl AdminApi {
    /// The API over `store`, acting on the msg_servers through `cluster`.
    #[must_use]
    pub fn new(store: Arc<dyn Store>, cluster: Arc<dyn Cluster>) -> Self {
        Self { store, cluster }
    }

    /// Whether `path` is the API's (`/api` and below).
    #[must_use]
    pub fn owns(path: &str) -> bool {
        path == "/api" || path.starts_with("/api/")
    }

    /// Answers one request to `/api/…`.
    #[must_use]
    pub fn handle(&self, request: &Request) -> Response {
        if !same_origin(request) {
            return http::error(
                StatusCode::FORBIDDEN,
                "cross-origin requests are not accepted",
            );
        }
        let route = match Route::of(request) {
            Ok(r) => r,
            Err(e) => return e.response(),
        };
        match self.dispatch(request, &route) {
            Ok(r) => r,
            Err(e) => e.response(),
        }
    }

    fn dispatch(&self, request: &Request, route: &Route) -> ApiResult {
        let segments = route.segments();
        let method = route.method().clone();
        let Some((&"api", rest)) = segments.split_first() else {
            return Err(ApiError::not_found("not an API path"));
        };
        match rest {
            ["openapi.json"] => match method {
                Method::GET | Method::HEAD => ok(&openapi()),
                _ => methods(&[Method::GET, Method::HEAD]),
            },
            ["users"] => match method {
                Method::GET | Method::HEAD => self.list_users(route),
                Method::POST => self.create_user(request),
                _ => methods(&[Method::GET, Method::HEAD, Method::POST]),
            },
            ["users", user] => {
                let user = id(user, "user")?;
                match method {
                    Method::GET | Method::HEAD => ok(&self.user(user)?),
                    Method::PATCH => self.update_user(request, user),
                    Method::DELETE => self.delete_user(user),
                    _ => methods(&[Method::GET, Method::HEAD, Method::PATCH, Method::DELETE]),
                }
            }
            ["users", user, "password"] => {
                let user = id(user, "user")?;
                match method {
                    Method::PUT => self.set_password(request, user),
                    _ => methods(&[Method::PUT]),
                }
            }
            ["users", user, action @ ("disable" | "enable")] => {
                let user = id(user, "user")?;
                match method {
                    Method::POST => {
                        let status = if *action == "disable" {
                            USER_STATUS_DEPARTED
                        } else {
                            0
                        };
                        self.set_status(user, status)?;
                        ok(&self.user(user)?)
                    }
                    _ => methods(&[Method::POST]),
                }
            }
            ["users", user, "sessions"] => {
                let user = id(user, "user")?;
                self.user(user)?;
                match method {
                    Method::GET | Method::HEAD => ok(&self.cluster.sessions(user)?),
                    Method::DELETE => {
                        let kicked = self.cluster.kick(user)?;
                        info!(user, ?kicked, "admin API: sessions kicked");
                        ok(&serde_json::json!({ "kicked": kicked }))
                    }
                    _ => methods(&[Method::GET, Method::HEAD, Method::DELETE]),
                }
            }
            ["departments"] => match method {
                Method::GET | Method::HEAD => self.list_departments(),
                Method::POST => self.create_department(request),
                _ => methods(&[Method::GET, Method::HEAD, Method::POST]),
            },
            ["departments", dept] => {
                let dept = id(dept, "department")?;
                match method {
                    Method::GET | Method::HEAD => ok(&self.department(dept)?),
                    Method::PATCH => self.rename_department(request, dept),
                    Method::DELETE => self.delete_department(dept),
                    _ => methods(&[Method::GET, Method::HEAD, Method::PATCH, Method::DELETE]),
                }
            }
            ["groups"] => match method {
                Method::GET | Method::HEAD => self.list_groups(),
                Method::POST => self.create_group(request),
                _ => methods(&[Method::GET, Method::HEAD, Method::POST]),
            },
            ["groups", group] => {
                let group = id(group, "group")?;
                match method {
                    Method::GET | Method::HEAD => ok(&ApiGroup::from(&self.group(group)?)),
                    Method::DELETE => self.delete_group(group),
                    _ => methods(&[Method::GET, Method::HEAD, Method::DELETE]),
                }
            }
            ["groups", group, "members"] => {
                let group = id(group, "group")?;
                match method {
                    Method::POST => {
                        let b: MembersBody = body(request)?;
                        self.change_members(group, MemberChange::Add, &b.validated()?)
                    }
                    _ => methods(&[Method::POST]),
                }
            }
            ["groups", group, "members", user] => {
                let group = id(group, "group")?;
                let user = id(user, "user")?;
                match method {
                    Method::DELETE => self.change_members(group, MemberChange::Remove, &[user]),
                    _ => methods(&[Method::DELETE]),
                }
            }
            _ => Err(ApiError::not_found(
                "no such API path; see /api/openapi.json",
            )),
        }
    }

    // ---- users ----

    fn user(&self, user: UserId) -> Result<ApiUser, ApiError> {
        self.store
            .users_by_ids(&[user])?
            .first()
            .map(ApiUser::from)
            .ok_or_else(|| ApiError::not_found(&format!("no user {user}")))
    }

    fn list_users(&self, route: &Route) -> ApiResult {
        let offset = number(route, "offset", 0)?;
        let limit = number(route, "limit", DEFAULT_PAGE)?.clamp(1, MAX_PAGE);
        let dept: Option<DeptId> = match route.query("dept_id") {
            None => None,
            Some(d) => Some(
                d.parse()
                    .map_err(|_| ApiError::bad("dept_id must be a number"))?,
            ),
        };
        let q = route.query("q").map(str::to_lowercase);
        let name = route.query("name");
        let users: Vec<ApiUser> = self
            .store
            .all_users()?
            .iter()
            .filter(|u| dept.is_none_or(|d| u.dept_id == d))
            .filter(|u| name.is_none_or(|n| u.name == n))
            .filter(|u| {
                q.as_deref().is_none_or(|q| {
                    u.name.to_lowercase().contains(q) || u.nick.to_lowercase().contains(q)
                })
            })
            .map(ApiUser::from)
            .collect();
        let total = users.len();
        let page = users.into_iter().skip(offset).take(limit).collect();
        ok(&UserPage {
            total,
            offset,
            limit,
            users: page,
        })
    }

    fn create_user(&self, request: &Request) -> ApiResult {
        let b: UserCreate = body(request)?;
        let (new, password) = b.validated()?;
        if new.dept_id != 0 {
            self.department(new.dept_id)?;
        }
        let id = self.store.add_user(&new, &md5_hex(password.as_bytes()))?;
        info!(user = id, name = %crate::clip::clip(&new.name), "admin API: user created");
        created(&self.user(id)?)
    }

    fn update_user(&self, request: &Request, user: UserId) -> ApiResult {
        let b: UserUpdateBody = body(request)?;
        let (update, status) = b.validated()?;
        self.user(user)?;
        if let Some(d) = update.dept_id
            && d != 0
        {
            self.department(d)?;
        }
        if update != UserUpdate::default() {
            self.store
                .update_user(user, &update)?
                .ok_or_else(|| ApiError::not_found(&format!("no user {user}")))?;
            info!(user, "admin API: profile changed");
        }
        if let Some(status) = status {
            self.set_status(user, status)?;
        }
        ok(&self.user(user)?)
    }

    /// Sets a user's status; disabling kicks their sessions (after the
    /// store is written, so a reconnect is refused).
    fn set_status(&self, user: UserId, status: u32) -> Result<(), ApiError> {
        if !self.store.set_user_status(user, status)? {
            return Err(ApiError::not_found(&format!("no user {user}")));
        }
        info!(user, status, "admin API: status set");
        if status == USER_STATUS_DEPARTED {
            self.kick_quietly(user);
        }
        Ok(())
    }

    /// Kicks a user's sessions after a change that already refuses their
    /// next login: a msg_server that cannot be told is logged, and its
    /// session ends at the latest when it next needs db_proxy.
    fn kick_quietly(&self, user: UserId) {
        match self.cluster.kick(user) {
            Ok(n) => info!(user, kicked = ?n, "admin API: sessions kicked"),
            Err(e) => warn!(user, error = %e, "admin API: sessions not kicked"),
        }
    }

    fn set_password(&self, request: &Request, user: UserId) -> ApiResult {
        let b: PasswordBody = body(request)?;
        let password = b.validated()?;
        if !self
            .store
            .set_password(user, &md5_hex(password.as_bytes()))?
        {
            return Err(ApiError::not_found(&format!("no user {user}")));
        }
        info!(user, "admin API: password set");
        no_content()
    }

    fn delete_user(&self, user: UserId) -> ApiResult {
        self.user(user)?;
        let groups = self.store.user_groups(user, None)?;
        if !self.store.delete_user(user)? {
            return Err(ApiError::not_found(&format!("no user {user}")));
        }
        info!(user, "admin API: user deleted");
        self.kick_quietly(user);
        for g in groups {
            let Some(group) = self.store.group(g.id)? else {
                continue;
            };
            self.tell(ImGroupChangeMemberNotify {
                user_id: group.creator,
                change_type: MemberChange::Remove.as_u32() as i32,
                group_id: group.id,
                cur_user_id_list: group.members.iter().map(|m| m.user_id).collect(),
                chg_user_id_list: vec![user],
            });
        }
        no_content()
    }

    // ---- departments ----

    fn department(&self, dept: DeptId) -> Result<ApiDepartment, ApiError> {
        self.store
            .departments_updated_since(0)?
            .iter()
            .find(|d| d.id == dept && d.status == 0)
            .map(ApiDepartment::from)
            .ok_or_else(|| ApiError::not_found(&format!("no department {dept}")))
    }

    fn list_departments(&self) -> ApiResult {
        let all: Vec<ApiDepartment> = self
            .store
            .departments_updated_since(0)?
            .iter()
            .filter(|d| d.status == 0)
            .map(ApiDepartment::from)
            .collect();
        ok(&all)
    }

    fn create_department(&self, request: &Request) -> ApiResult {
        let b: DepartmentCreate = body(request)?;
        let b = b.validated()?;
        if b.parent_id != 0 {
            self.department(b.parent_id)?;
        }
        if self
            .store
            .departments_updated_since(0)?
            .iter()
            .any(|d| d.status == 0 && d.name == b.name)
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("department name {:?} is already taken", b.name),
            ));
        }
        let id = self
            .store
            .add_department(&b.name, b.priority, b.parent_id)?;
        info!(dept = id, "admin API: department created");
        created(&self.department(id)?)
    }

    fn rename_department(&self, request: &Request, dept: DeptId) -> ApiResult {
        let b: DepartmentRename = body(request)?;
        let name = b.validated()?;
        if self
            .store
            .departments_updated_since(0)?
            .iter()
            .any(|d| d.status == 0 && d.name == name && d.id != dept)
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("department name {name:?} is already taken"),
            ));
        }
        if !self.store.rename_department(dept, &name)? {
            return Err(ApiError::not_found(&format!("no department {dept}")));
        }
        ok(&self.department(dept)?)
    }

    fn delete_department(&self, dept: DeptId) -> ApiResult {
        if !self.store.delete_department(dept)? {
            return Err(ApiError::not_found(&format!("no department {dept}")));
        }
        info!(dept, "admin API: department deleted");
        no_content()
    }

    // ---- groups ----

    fn group(&self, group: GroupId) -> Result<crate::store::Group, ApiError> {
        self.store
            .group(group)?
            .ok_or_else(|| ApiError::not_found(&format!("no group {group}")))
    }

    fn list_groups(&self) -> ApiResult {
        let all: Vec<ApiGroup> = self.store.groups()?.iter().map(ApiGroup::from).collect();
        ok(&all)
    }

    fn create_group(&self, request: &Request) -> ApiResult {
        let b: GroupCreate = body(request)?;
        let b = b.validated()?;
        let group = self.store.create_group(&NewGroup {
            name: b.name,
            avatar: b.avatar,
            creator: b.creator,
            group_type: GroupType::Normal,
            members: b.members,
        })?;
        info!(group = group.id, "admin API: group created");
        let members: Vec<UserId> = group.members.iter().map(|m| m.user_id).collect();
        // As msg_server does for a client's creation: announced as an
        // addition, so every msg_server learns the members.
        self.tell(ImGroupChangeMemberNotify {
            user_id: group.creator,
            change_type: MemberChange::Add.as_u32() as i32,
            group_id: group.id,
            cur_user_id_list: members.clone(),
            chg_user_id_list: members,
        });
        created(&ApiGroup::from(&group))
    }

    fn change_members(&self, group: GroupId, change: MemberChange, users: &[UserId]) -> ApiResult {
        let g = self.group(group)?;
        let done = self
            .store
            .change_group_members(Actor::Admin, group, change, users)?;
        if !done.changed.is_empty() {
            info!(
                group,
                ?change,
                users = done.changed.len(),
                "admin API: members changed"
            );
            self.tell(ImGroupChangeMemberNotify {
                user_id: g.creator,
                change_type: change.as_u32() as i32,
                group_id: group,
                cur_user_id_list: done.members.clone(),
                chg_user_id_list: done.changed.clone(),
            });
        }
        ok(&ApiGroup::from(&self.group(group)?))
    }

    fn delete_group(&self, group: GroupId) -> ApiResult {
        let Some(g) = self.store.delete_group(group)? else {
            return Err(ApiError::not_found(&format!("no group {group}")));
        };
        info!(group, "admin API: group deleted");
        // Every member is removed: clients drop the group, msg_servers
        // forget it.
        self.tell(ImGroupChangeMemberNotify {
            user_id: g.creator,
            change_type: MemberChange::Remove.as_u32() as i32,
            group_id: group,
            cur_user_id_list: Vec::new(),
            chg_user_id_list: g.members.iter().map(|m| m.user_id).collect(),
        });
        no_content()
    }

    /// Announces a group change; the store is already written, so a
    /// msg_server that cannot be told only delays what members see until
    /// they next log in (logged, not an error for the caller).
    fn tell(&self, notify: ImGroupChangeMemberNotify) {
        let group = notify.group_id;
        if let Err(e) = self.cluster.announce(notify) {
            warn!(group, error = %e, "admin API: group change stored but not announced");
        }
    }
}

#[cfg(test)]
mod tests;
