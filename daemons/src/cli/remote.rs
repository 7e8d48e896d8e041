//! `teamtalk user|dept|group …` over the admin API, when the system runs.
//!
//! A change made on the store directly reaches the running system only
//! partly: a disabled user's open sessions stay until they next need
//! db_proxy, group members online are not told. Over the admin API the
//! change takes effect at once (kicks, group notices), so the commands use
//! it whenever they can:
//!
//! - `--admin URL` (or `TEAMTALK_ADMIN_URL`) names the admin endpoint;
//!   the token comes from `--token-file PATH` or `TEAMTALK_ADMIN_TOKEN`;
//! - otherwise, when `teamtalk up` serves the data directory (its serve
//!   lock is held) and wrote [`ADMIN_FILE`] there, that endpoint (and the
//!   token file `teamtalk up` was given) is used;
//! - otherwise the store is opened directly, as before.
//!
//! The output is the same either way.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::{CliError, DeptCommand, GroupCommand, UserCommand};
use crate::tools::admin_client::{AdminClient, AdminClientError};

/// The file `teamtalk up` writes in its data directory while it runs: the
/// admin endpoint's URL and the token file it was given, as JSON.
pub const ADMIN_FILE: &str = "admin.json";
/// Environment variable naming the admin endpoint.
pub const ADMIN_URL_ENV: &str = "TEAMTALK_ADMIN_URL";
/// Environment variable holding the admin token.
pub const ADMIN_TOKEN_ENV: &str = "TEAMTALK_ADMIN_TOKEN";
/// Time limit of each API call.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Users fetched per page for `user list`.
const PAGE: usize = 1000;

/// Where the admin API is, for the directory commands.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ApiArgs {
    /// The admin endpoint of a running system (`http://127.0.0.1:8090`):
    /// the change goes through its API and takes effect at once. Default:
    /// the one `teamtalk up` serving the data directory advertises, else
    /// the store directly.
    #[arg(long = "admin", env = ADMIN_URL_ENV, value_name = "URL")]
    pub admin: Option<String>,
    /// File holding the admin token (else `TEAMTALK_ADMIN_TOKEN`).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

/// What `teamtalk up` advertises in [`ADMIN_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Advertised {
    /// The admin endpoint.
    pub url: String,
    /// The token file `teamtalk up` was given, if any.
    pub token_file: Option<PathBuf>,
}

/// Writes [`ADMIN_FILE`] into `data_dir`.
///
/// # Errors
/// The file cannot be written.
pub fn advertise(data_dir: &Path, what: &Advertised) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(what).map_err(std::io::Error::other)?;
    let tmp = data_dir.join(format!("{ADMIN_FILE}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, data_dir.join(ADMIN_FILE))
}

/// Removes [`ADMIN_FILE`] (at a clean stop).
pub fn withdraw(data_dir: &Path) {
    let _ = std::fs::remove_file(data_dir.join(ADMIN_FILE));
}

/// Whether a system serves `data_dir`: its serve lock is held (taken by a
/// shared lock attempt, which changes nothing).
fn served(data_dir: &Path) -> bool {
    let Ok(f) = std::fs::File::open(data_dir.join(crate::store::LOCK_FILE_NAME)) else {
        return false;
    };
    matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock))
}

fn read_token(path: &Path) -> Result<String, CliError> {
    super::read_token(path)
}

/// The API client to use, or `None` for the store directly.
///
/// # Errors
/// An unreadable token file.
pub fn client(api: &ApiArgs, data_dir: &Path) -> Result<Option<AdminClient>, CliError> {
    let env_token = || {
        std::env::var(ADMIN_TOKEN_ENV)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    };
    if let Some(url) = &api.admin {
        let token = match &api.token_file {
            Some(p) => Some(read_token(p)?),
            None => env_token(),
        };
        return Ok(Some(AdminClient::new(url, token, TIMEOUT)));
    }
    if !served(data_dir) {
        return Ok(None);
    }
    let Ok(text) = std::fs::read_to_string(data_dir.join(ADMIN_FILE)) else {
        return Ok(None);
    };
    let Ok(ad) = serde_json::from_str::<Advertised>(&text) else {
        tracing::warn!(file = %data_dir.join(ADMIN_FILE).display(), "unreadable; using the store");
        return Ok(None);
    };
    let token = match (&api.token_file, &ad.token_file) {
        (Some(p), _) => Some(read_token(p)?),
        (None, _) if env_token().is_some() => env_token(),
        (None, Some(p)) => Some(read_token(p)?),
        (None, None) => None,
    };
    tracing::info!(url = %ad.url, "the system runs: using its admin API");
    Ok(Some(AdminClient::new(&ad.url, token, TIMEOUT)))
}

/// An API refusal as the command's error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RemoteError(String);

impl From<AdminClientError> for CliError {
    fn from(e: AdminClientError) -> Self {
        let text = match &e {
            AdminClientError::Api { status: 401, .. } => {
                format!("{e}: give the admin token with --token-file PATH or {ADMIN_TOKEN_ENV}")
            }
            _ => e.to_string(),
        };
        Self::Remote(RemoteError(text))
    }
}

fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// A user named by login name, or else by id, as the store path resolves
/// them.
fn find_user(c: &AdminClient, who: &str) -> Result<Value, CliError> {
    let q: String = form_urlencoded::byte_serialize(who.as_bytes()).collect();
    let page = c.call("GET", &format!("/api/users?name={q}"), None)?;
    if let Some(u) = page["users"].as_array().and_then(|a| a.first()) {
        return Ok(u.clone());
    }
    if let Ok(id) = who.parse::<u32>() {
        match c.call("GET", &format!("/api/users/{id}"), None) {
            Ok(u) => return Ok(u),
            Err(e) if e.status() == Some(404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(CliError::Remote(RemoteError(format!(
        "no user {who:?} (see `teamtalk user list`)"
    ))))
}

/// A department named by name, or else by id.
fn find_dept(c: &AdminClient, dept: &str) -> Result<Value, CliError> {
    let all = c.call("GET", "/api/departments", None)?;
    let list = all.as_array().cloned().unwrap_or_default();
    list.iter()
        .find(|d| text(d, "name") == dept)
        .or_else(|| {
            let id = dept.parse::<u64>().ok()?;
            list.iter().find(|d| num(d, "id") == id)
        })
        .cloned()
        .ok_or_else(|| {
            CliError::Remote(RemoteError(format!(
                "no department {dept:?} (see `teamtalk dept list`)"
            )))
        })
}

/// `teamtalk user …` over the API.
///
/// # Errors
/// What the API refuses, transport failures, output errors.
pub fn user(cmd: &UserCommand, c: &AdminClient, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        UserCommand::Add {
            name,
            password,
            nick,
            dept,
            ..
        } => {
            let mut body = json!({"name": name, "password": password});
            if let Some(n) = nick {
                body["nick"] = json!(n);
            }
            if let Some(d) = dept {
                body["dept_id"] = json!(num(&find_dept(c, d)?, "id"));
            }
            let u = c.call("POST", "/api/users", Some(&body))?;
            writeln!(out, "added user {name} with id {}", num(&u, "id"))?;
        }
        UserCommand::List { .. } => {
            writeln!(
                out,
                "{:>8}  {:<24} {:<24} {:>6}  state",
                "id", "name", "nick", "dept"
            )?;
            let mut offset = 0;
            loop {
                let page = c.call(
                    "GET",
                    &format!("/api/users?offset={offset}&limit={PAGE}"),
                    None,
                )?;
                let users = page["users"].as_array().cloned().unwrap_or_default();
                for u in &users {
                    let state = if u["disabled"].as_bool() == Some(true) {
                        "disabled"
                    } else {
                        "active"
                    };
                    writeln!(
                        out,
                        "{:>8}  {:<24} {:<24} {:>6}  {state}",
                        num(u, "id"),
                        text(u, "name"),
                        text(u, "nick"),
                        num(u, "dept_id")
                    )?;
                }
                offset += users.len();
                let total = usize::try_from(num(&page, "total")).unwrap_or(usize::MAX);
                if users.is_empty() || offset >= total {
                    writeln!(out, "{offset} users")?;
                    break;
                }
            }
        }
        UserCommand::Passwd { user, password, .. } => {
            let u = find_user(c, user)?;
            c.call(
                "PUT",
                &format!("/api/users/{}/password", num(&u, "id")),
                Some(&json!({"password": password})),
            )?;
            writeln!(
                out,
                "changed the password of {} (id {}); the old one is refused from now on",
                text(&u, "name"),
                num(&u, "id")
            )?;
        }
        UserCommand::Disable { user, .. } => {
            let u = find_user(c, user)?;
            c.call(
                "POST",
                &format!("/api/users/{}/disable", num(&u, "id")),
                None,
            )?;
            writeln!(
                out,
                "disabled {} (id {}): logins are refused from now on and open sessions were \
                 closed (`teamtalk user enable {}` undoes it)",
                text(&u, "name"),
                num(&u, "id"),
                text(&u, "name")
            )?;
        }
        UserCommand::Enable { user, .. } => {
            let u = find_user(c, user)?;
            c.call(
                "POST",
                &format!("/api/users/{}/enable", num(&u, "id")),
                None,
            )?;
            writeln!(out, "enabled {} (id {})", text(&u, "name"), num(&u, "id"))?;
        }
        UserCommand::Del { user, .. } => {
            let u = find_user(c, user)?;
            c.call("DELETE", &format!("/api/users/{}", num(&u, "id")), None)?;
            writeln!(
                out,
                "deleted user {} (id {})",
                text(&u, "name"),
                num(&u, "id")
            )?;
        }
        UserCommand::Seed { .. } => {
            return Err(CliError::Remote(RemoteError(
                "`user seed` works on the store only; run it without --admin".into(),
            )));
        }
    }
    Ok(())
}

/// `teamtalk dept …` over the API.
///
/// # Errors
/// What the API refuses, transport failures, output errors.
pub fn dept(cmd: &DeptCommand, c: &AdminClient, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        DeptCommand::Add { name, parent, .. } => {
            let mut body = json!({"name": name});
            if let Some(p) = parent.as_deref().filter(|p| *p != "0") {
                body["parent_id"] = json!(num(&find_dept(c, p)?, "id"));
            }
            let d = c.call("POST", "/api/departments", Some(&body))?;
            writeln!(out, "added department {name} with id {}", num(&d, "id"))?;
        }
        DeptCommand::List { .. } => {
            let all = c.call("GET", "/api/departments", None)?;
            let list = all.as_array().cloned().unwrap_or_default();
            writeln!(out, "{:>8}  {:<24} {:>8}", "id", "name", "parent")?;
            for d in &list {
                writeln!(
                    out,
                    "{:>8}  {:<24} {:>8}",
                    num(d, "id"),
                    text(d, "name"),
                    num(d, "parent_id")
                )?;
            }
            writeln!(out, "{} departments", list.len())?;
        }
        DeptCommand::Rename { dept, name, .. } => {
            let d = find_dept(c, dept)?;
            c.call(
                "PATCH",
                &format!("/api/departments/{}", num(&d, "id")),
                Some(&json!({"name": name})),
            )?;
            writeln!(
                out,
                "renamed department {} (id {}) to {name}",
                text(&d, "name"),
                num(&d, "id")
            )?;
        }
        DeptCommand::Del { dept, .. } => {
            let d = find_dept(c, dept)?;
            c.call(
                "DELETE",
                &format!("/api/departments/{}", num(&d, "id")),
                None,
            )?;
            writeln!(
                out,
                "deleted department {} (id {})",
                text(&d, "name"),
                num(&d, "id")
            )?;
        }
    }
    Ok(())
}

fn user_ids(c: &AdminClient, names: &[String]) -> Result<Vec<u64>, CliError> {
    names
        .iter()
        .map(|n| find_user(c, n).map(|u| num(&u, "id")))
        .collect()
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// `teamtalk group …` over the API.
///
/// # Errors
/// What the API refuses, transport failures, output errors.
pub fn group(cmd: &GroupCommand, c: &AdminClient, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        GroupCommand::Create {
            name,
            creator,
            members,
            avatar,
            ..
        } => {
            let creator = num(&find_user(c, creator)?, "id");
            let members = user_ids(c, members)?;
            let g = c.call(
                "POST",
                "/api/groups",
                Some(&json!({"name": name, "creator": creator, "members": members, "avatar": avatar})),
            )?;
            writeln!(
                out,
                "created group {} {:?} (normal, version {}) with members {:?}",
                num(&g, "id"),
                text(&g, "name"),
                num(&g, "version"),
                ids(&g["members"])
            )?;
        }
        GroupCommand::List { .. } => {
            let all = c.call("GET", "/api/groups", None)?;
            let list = all.as_array().cloned().unwrap_or_default();
            writeln!(
                out,
                "{:>8}  {:<24} {:<6} {:>8} {:>8} {:>8}",
                "id", "name", "type", "creator", "members", "version"
            )?;
            for g in &list {
                writeln!(
                    out,
                    "{:>8}  {:<24} {:<6} {:>8} {:>8} {:>8}",
                    num(g, "id"),
                    text(g, "name"),
                    text(g, "type"),
                    num(g, "creator"),
                    ids(&g["members"]).len(),
                    num(g, "version")
                )?;
            }
            writeln!(out, "{} groups", list.len())?;
        }
        GroupCommand::Show { group, .. } => {
            let g = c.call("GET", &format!("/api/groups/{group}"), None)?;
            let members = ids(&g["members"]);
            writeln!(
                out,
                "group {} {:?}: {}, creator {}, version {}, {} members",
                num(&g, "id"),
                text(&g, "name"),
                text(&g, "type"),
                num(&g, "creator"),
                num(&g, "version"),
                members.len()
            )?;
            writeln!(out, "{:>8}  {:<24}", "id", "name")?;
            for m in members {
                let name = c
                    .call("GET", &format!("/api/users/{m}"), None)
                    .map(|u| text(&u, "name").to_owned())
                    .unwrap_or_default();
                writeln!(out, "{m:>8}  {name:<24}")?;
            }
        }
        GroupCommand::Add { group, users, .. } => {
            let before = c.call("GET", &format!("/api/groups/{group}"), None)?;
            let users = user_ids(c, users)?;
            let g = c.call(
                "POST",
                &format!("/api/groups/{group}/members"),
                Some(&json!({ "users": users })),
            )?;
            let had = ids(&before["members"]);
            let changed: Vec<u64> = users.into_iter().filter(|u| !had.contains(u)).collect();
            writeln!(
                out,
                "group {group}: added {changed:?}; now version {} with {} members",
                num(&g, "version"),
                ids(&g["members"]).len()
            )?;
        }
        GroupCommand::Remove { group, users, .. } => {
            let mut g = c.call("GET", &format!("/api/groups/{group}"), None)?;
            let had = ids(&g["members"]);
            let users = user_ids(c, users)?;
            let mut changed = Vec::new();
            for u in users {
                g = c.call("DELETE", &format!("/api/groups/{group}/members/{u}"), None)?;
                if had.contains(&u) && !changed.contains(&u) {
                    changed.push(u);
                }
            }
            changed.sort_unstable();
            writeln!(
                out,
                "group {group}: removed {changed:?}; now version {} with {} members",
                num(&g, "version"),
                ids(&g["members"]).len()
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertisement_round_trips_and_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let ad = Advertised {
            url: "http://127.0.0.1:8090".into(),
            token_file: Some(dir.path().join("token")),
        };
        advertise(dir.path(), &ad).unwrap();
        let text = std::fs::read_to_string(dir.path().join(ADMIN_FILE)).unwrap();
        assert_eq!(serde_json::from_str::<Advertised>(&text).unwrap(), ad);
        // Not served (no lock held): the store is used.
        assert!(client(&ApiArgs::default(), dir.path()).unwrap().is_none());
        // Served: the advertised endpoint, with its token file.
        std::fs::write(dir.path().join("token"), "t0k\n").unwrap();
        let lock = crate::store::ServeLock::acquire(dir.path()).unwrap();
        let c = client(&ApiArgs::default(), dir.path()).unwrap().unwrap();
        assert_eq!(c.base(), "http://127.0.0.1:8090");
        drop(lock);
        withdraw(dir.path());
        assert!(!dir.path().join(ADMIN_FILE).exists());
        // Named: used whatever the directory says.
        let named = ApiArgs {
            admin: Some("127.0.0.1:9".into()),
            token_file: None,
        };
        assert_eq!(
            client(&named, dir.path()).unwrap().unwrap().base(),
            "http://127.0.0.1:9"
        );
    }
}
