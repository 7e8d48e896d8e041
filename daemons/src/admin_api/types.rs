//! The API's JSON: what it answers (`Api*`) and the request bodies, each
//! with its validation (bounds on every string and list, so nothing a
//! request carries is stored unchecked).

use serde::{Deserialize, Serialize};

use crate::store::directory::{
    DirectoryError, check_dept_name, check_name, check_nick, check_password,
};
use crate::store::groups::{MAX_GROUP_AVATAR_LEN, MAX_GROUP_NAME_LEN};
use crate::store::{
    Department, DeptId, Group, GroupType, MAX_GROUP_MEMBERS, NewUser, USER_STATUS_DEPARTED, User,
    UserId, UserUpdate,
};

/// Longest e-mail, phone or pinyin, in bytes.
pub const MAX_TEXT: usize = 128;
/// Longest avatar URL or signature, in bytes.
pub const MAX_LONG_TEXT: usize = 1024;

/// A request body that is well formed JSON but not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    /// The field at fault.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ValidationError {
    ValidationError {
        field,
        reason: reason.into(),
    }
}

/// A free text field: at most `max` bytes, no control characters.
fn text(field: &'static str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.len() > max {
        return Err(invalid(field, format!("longer than {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "contains control characters"));
    }
    Ok(())
}

/// A name: non-empty, trimmed, at most `max` bytes, no control characters.
fn name(field: &'static str, value: &str, max: usize) -> Result<String, ValidationError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    text(field, v, max)?;
    Ok(v.to_owned())
}

/// The directory's own checks (the same as `teamtalk user`'s), as a
/// refusal of `field`.
fn directory(field: &'static str, r: Result<(), DirectoryError>) -> Result<(), ValidationError> {
    r.map_err(|e| invalid(field, e.to_string()))
}

fn login_name(value: &str) -> Result<String, ValidationError> {
    directory("name", check_name(value))?;
    Ok(value.to_owned())
}

fn password(value: &str) -> Result<(), ValidationError> {
    directory("password", check_password(value))
}

fn nick(value: &str) -> Result<(), ValidationError> {
    directory("nick", check_nick(value))
}

fn dept_name(value: &str) -> Result<String, ValidationError> {
    let v = value.trim();
    directory("name", check_dept_name(v))?;
    Ok(v.to_owned())
}

fn sex(value: u32) -> Result<u32, ValidationError> {
    if value > 2 {
        return Err(invalid("sex", "0 unknown, 1 male or 2 female"));
    }
    Ok(value)
}

/// TeamTalk's user statuses: 0..=4, 3 meaning departed (disabled).
fn status(value: u32) -> Result<u32, ValidationError> {
    if value > 4 {
        return Err(invalid("status", "0 to 4 (3: departed, cannot log in)"));
    }
    Ok(value)
}

/// A user as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiUser {
    /// User id.
    pub id: UserId,
    /// Login name.
    pub name: String,
    /// Display name.
    pub nick: String,
    /// 0 unknown, 1 male, 2 female.
    pub sex: u32,
    /// Department (0: none).
    pub dept_id: DeptId,
    /// Avatar URL.
    pub avatar: String,
    /// E-mail address.
    pub email: String,
    /// Telephone number.
    pub phone: String,
    /// Pinyin of the name.
    pub domain: String,
    /// TeamTalk's status, 0..=4.
    pub status: u32,
    /// Whether the user is disabled (status 3, departed): cannot log in.
    pub disabled: bool,
    /// Signature line.
    pub sign_info: String,
    /// Creation time (Unix seconds).
    pub created: u32,
    /// Last profile change (Unix seconds).
    pub updated: u32,
}

impl From<&User> for ApiUser {
    fn from(u: &User) -> Self {
        Self {
            id: u.id,
            name: u.name.clone(),
            nick: u.nick.clone(),
            sex: u.sex,
            dept_id: u.dept_id,
            avatar: u.avatar.clone(),
            email: u.email.clone(),
            phone: u.phone.clone(),
            domain: u.domain.clone(),
            status: u.status,
            disabled: u.status == USER_STATUS_DEPARTED,
            sign_info: u.sign_info.clone(),
            created: u.created,
            updated: u.updated,
        }
    }
}

/// A page of `GET /api/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPage {
    /// Users matching the filters, over all pages.
    pub total: usize,
    /// Index of the first user of this page.
    pub offset: usize,
    /// Most users per page.
    pub limit: usize,
    /// This page, by id.
    pub users: Vec<ApiUser>,
}

/// `POST /api/users`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserCreate {
    /// Login name.
    pub name: String,
    /// Password in plain text (stored as Argon2id of its MD5, the form
    /// TeamTalk clients send).
    pub password: String,
    /// Display name (the login name if absent).
    #[serde(default)]
    pub nick: Option<String>,
    /// Department.
    #[serde(default)]
    pub dept_id: DeptId,
    /// 0 unknown, 1 male, 2 female.
    #[serde(default)]
    pub sex: u32,
    /// E-mail address.
    #[serde(default)]
    pub email: String,
    /// Telephone number.
    #[serde(default)]
    pub phone: String,
    /// Avatar URL.
    #[serde(default)]
    pub avatar: String,
    /// Pinyin of the name.
    #[serde(default)]
    pub domain: String,
}

impl UserCreate {
    /// The user to store and the password.
    ///
    /// # Errors
    /// The first field that is not acceptable.
    pub fn validated(self) -> Result<(NewUser, String), ValidationError> {
        let name = login_name(&self.name)?;
        password(&self.password)?;
        let nick = match &self.nick {
            Some(n) => {
                nick(n)?;
                n.clone()
            }
            None => name.clone(),
        };
        text("email", &self.email, MAX_TEXT)?;
        text("phone", &self.phone, MAX_TEXT)?;
        text("avatar", &self.avatar, MAX_LONG_TEXT)?;
        text("domain", &self.domain, MAX_TEXT)?;
        Ok((
            NewUser {
                name,
                nick,
                sex: sex(self.sex)?,
                dept_id: self.dept_id,
                avatar: self.avatar,
                email: self.email,
                phone: self.phone,
                domain: self.domain,
                status: 0,
                sign_info: String::new(),
            },
            self.password,
        ))
    }
}

/// `PATCH /api/users/{id}`: the fields to change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserUpdateBody {
    /// Display name.
    #[serde(default)]
    pub nick: Option<String>,
    /// Department (0: none).
    #[serde(default)]
    pub dept_id: Option<DeptId>,
    /// TeamTalk's status, 0..=4; 3 disables the user (their sessions are
    /// kicked), another value enables them again.
    #[serde(default)]
    pub status: Option<u32>,
    /// 0 unknown, 1 male, 2 female.
    #[serde(default)]
    pub sex: Option<u32>,
    /// E-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// Telephone number.
    #[serde(default)]
    pub phone: Option<String>,
    /// Avatar URL.
    #[serde(default)]
    pub avatar: Option<String>,
    /// Pinyin of the name.
    #[serde(default)]
    pub domain: Option<String>,
    /// Signature line.
    #[serde(default)]
    pub sign_info: Option<String>,
}

impl UserUpdateBody {
    /// The profile change and the new status, if any.
    ///
    /// # Errors
    /// The first field that is not acceptable, or a body changing nothing.
    pub fn validated(self) -> Result<(UserUpdate, Option<u32>), ValidationError> {
        if let Some(n) = &self.nick {
            nick(n)?;
        }
        for (field, value, max) in [
            ("email", &self.email, MAX_TEXT),
            ("phone", &self.phone, MAX_TEXT),
            ("domain", &self.domain, MAX_TEXT),
            ("avatar", &self.avatar, MAX_LONG_TEXT),
            ("sign_info", &self.sign_info, MAX_LONG_TEXT),
        ] {
            if let Some(v) = value {
                text(field, v, max)?;
            }
        }
        let status = self.status.map(status).transpose()?;
        let u = UserUpdate {
            nick: self.nick,
            dept_id: self.dept_id,
            sex: self.sex.map(sex).transpose()?,
            email: self.email,
            phone: self.phone,
            avatar: self.avatar,
            domain: self.domain,
            sign_info: self.sign_info,
        };
        if u == UserUpdate::default() && status.is_none() {
            return Err(invalid("body", "names no field to change"));
        }
        Ok((u, status))
    }
}

/// `PUT /api/users/{id}/password`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    /// The new password in plain text.
    pub password: String,
}

impl PasswordBody {
    /// The password.
    ///
    /// # Errors
    /// An empty or over-long password.
    pub fn validated(self) -> Result<String, ValidationError> {
        password(&self.password)?;
        Ok(self.password)
    }
}

/// A department as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiDepartment {
    /// Department id.
    pub id: DeptId,
    /// Name.
    pub name: String,
    /// Parent (0: a root).
    pub parent_id: DeptId,
    /// Display order among siblings.
    pub priority: u32,
    /// Last change (Unix seconds).
    pub updated: u32,
}

impl From<&Department> for ApiDepartment {
    fn from(d: &Department) -> Self {
        Self {
            id: d.id,
            name: d.name.clone(),
            parent_id: d.parent_id,
            priority: d.priority,
            updated: d.updated,
        }
    }
}

/// `POST /api/departments`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentCreate {
    /// Name (unique among live departments).
    pub name: String,
    /// Parent (0: a root).
    #[serde(default)]
    pub parent_id: DeptId,
    /// Display order among siblings.
    #[serde(default)]
    pub priority: u32,
}

impl DepartmentCreate {
    /// The same, name trimmed.
    ///
    /// # Errors
    /// An empty, over-long or unprintable name.
    pub fn validated(self) -> Result<Self, ValidationError> {
        Ok(Self {
            name: dept_name(&self.name)?,
            ..self
        })
    }
}

/// `PATCH /api/departments/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentRename {
    /// The new name.
    pub name: String,
}

impl DepartmentRename {
    /// The name, trimmed.
    ///
    /// # Errors
    /// An empty, over-long or unprintable name.
    pub fn validated(self) -> Result<String, ValidationError> {
        dept_name(&self.name)
    }
}

/// A group as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiGroup {
    /// Group id.
    pub id: u32,
    /// Name.
    pub name: String,
    /// Avatar URL.
    pub avatar: String,
    /// Creator.
    pub creator: UserId,
    /// `normal` (made by the administration) or `tmp` (by a client).
    #[serde(rename = "type")]
    pub group_type: String,
    /// Bumped by every change.
    pub version: u32,
    /// Members, by id.
    pub members: Vec<UserId>,
    /// Creation time (Unix seconds).
    pub created: u32,
}

impl From<&Group> for ApiGroup {
    fn from(g: &Group) -> Self {
        let mut members: Vec<UserId> = g.members.iter().map(|m| m.user_id).collect();
        members.sort_unstable();
        Self {
            id: g.id,
            name: g.name.clone(),
            avatar: g.avatar.clone(),
            creator: g.creator,
            group_type: match g.group_type {
                GroupType::Tmp => "tmp",
                _ => "normal",
            }
            .to_owned(),
            version: g.version,
            members,
            created: g.created,
        }
    }
}

/// `POST /api/groups`: a normal group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupCreate {
    /// Name.
    pub name: String,
    /// Creator, a member (an existing user).
    pub creator: UserId,
    /// The other members.
    #[serde(default)]
    pub members: Vec<UserId>,
    /// Avatar URL.
    #[serde(default)]
    pub avatar: String,
}

impl GroupCreate {
    /// The same, checked.
    ///
    /// # Errors
    /// An empty or over-long name or avatar, no creator, too many members.
    pub fn validated(self) -> Result<Self, ValidationError> {
        let name = name("name", &self.name, MAX_GROUP_NAME_LEN)?;
        text("avatar", &self.avatar, MAX_GROUP_AVATAR_LEN)?;
        if self.creator == 0 {
            return Err(invalid("creator", "must name a user"));
        }
        members(&self.members)?;
        Ok(Self { name, ..self })
    }
}

fn members(users: &[UserId]) -> Result<(), ValidationError> {
    if users.len() > MAX_GROUP_MEMBERS {
        return Err(invalid("members", format!("more than {MAX_GROUP_MEMBERS}")));
    }
    if users.contains(&0) {
        return Err(invalid("members", "0 names no user"));
    }
    Ok(())
}

/// `POST /api/groups/{id}/members`: users to add.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembersBody {
    /// The users.
    pub users: Vec<UserId>,
}

impl MembersBody {
    /// The users, checked.
    ///
    /// # Errors
    /// None, too many, or user 0.
    pub fn validated(self) -> Result<Vec<UserId>, ValidationError> {
        if self.users.is_empty() {
            return Err(invalid("users", "must name at least one user"));
        }
        members(&self.users)?;
        Ok(self.users)
    }
}

/// One online session of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineSession {
    /// The msg_server holding it (its client address).
    pub server: String,
    /// TeamTalk's `ClientType` value.
    pub client_type: u32,
    /// That type's name: `windows`, `mac`, `ios`, `android`, or `other`.
    pub client: String,
    /// The client's address, when known.
    pub addr: Option<String>,
    /// The status the client set (1 online, 2 offline, 3 leave).
    pub status: i32,
}

/// The name of a TeamTalk `ClientType` value.
#[must_use]
pub fn client_name(client_type: u32) -> &'static str {
    match client_type {
        0x01 => "windows",
        0x02 => "mac",
        0x11 => "ios",
        0x12 => "android",
        _ => "other",
    }
}
