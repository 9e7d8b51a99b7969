//! The app aggregate: its draft configuration and its published versions.

use chrono::{DateTime, Utc};
use maas_user::contract::UserId;

use super::config::AppConfig;

maas_shared::define_id!(
    /// Identifies an app.
    AppId
);

/// Draft or published (its endpoint answers with the published version).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppStatus {
    /// Not callable by app keys.
    Draft,
    /// Callable: the endpoint serves the published version.
    Published,
}

impl AppStatus {
    /// The name the API shows.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Published => "published",
        }
    }
}

/// An app.
#[derive(Clone, Debug, PartialEq)]
pub struct App {
    /// Id.
    pub id: AppId,
    /// Owner (charged for its calls).
    pub owner: UserId,
    /// Name, unique per owner.
    pub name: String,
    /// Description.
    pub description: String,
    /// The draft configuration (what the next publish snapshots).
    pub draft: AppConfig,
    /// The version the endpoint serves, when published.
    pub published_version: Option<u32>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl App {
    /// Draft or published.
    #[must_use]
    pub fn status(&self) -> AppStatus {
        if self.published_version.is_some() {
            AppStatus::Published
        } else {
            AppStatus::Draft
        }
    }
}

/// An immutable published configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct AppVersion {
    /// Its app.
    pub app_id: AppId,
    /// 1, 2, … in publishing order.
    pub number: u32,
    /// The configuration as published.
    pub config: AppConfig,
    /// What the publisher said of it.
    pub note: Option<String>,
    /// The version it restored, for a rollback.
    pub rollback_of: Option<u32>,
    /// Who published it (`None`: the operator at the CLI).
    pub published_by: Option<UserId>,
    /// When.
    pub published_at: DateTime<Utc>,
}

/// Checks an app's name: 1 to 100 characters, no control characters.
///
/// # Errors
/// A message naming the rule.
pub fn parse_name(raw: &str) -> Result<String, &'static str> {
    let name = raw.trim();
    let n = name.chars().count();
    if n == 0 || n > 100 || name.chars().any(char::is_control) {
        return Err("1 to 100 characters, no control characters");
    }
    Ok(name.to_owned())
}

/// Checks a description: at most 2,000 characters, no NUL.
///
/// # Errors
/// A message naming the rule.
pub fn parse_description(raw: &str) -> Result<String, &'static str> {
    if raw.chars().count() > 2000 || raw.contains('\0') {
        return Err("at most 2,000 characters, no NUL");
    }
    Ok(raw.trim().to_owned())
}

/// Checks a publish note: at most 500 characters, no control characters.
///
/// # Errors
/// A message naming the rule.
pub fn parse_note(raw: Option<&str>) -> Result<Option<String>, &'static str> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(note) if note.chars().count() <= 500 && !note.chars().any(char::is_control) => {
            Ok(Some(note.to_owned()))
        }
        Some(_) => Err("at most 500 characters on one line"),
    }
}

/// Checks an end user's id (the caller's opaque `user`): 1 to 256 characters, no control
/// characters.
///
/// # Errors
/// A message naming the rule.
pub fn parse_end_user(raw: &str) -> Result<String, &'static str> {
    let n = raw.chars().count();
    if n == 0 || n > 256 || raw.chars().any(char::is_control) {
        return Err("1 to 256 characters, no control characters");
    }
    Ok(raw.to_owned())
}
