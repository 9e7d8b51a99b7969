//! Rate limits and quotas as one model: a rule caps one metric (requests or tokens) of one subject
//! (a user or a key) per window. Rate limits use short windows and live only in Redis; quotas use
//! calendar windows (day, month, total) and are also kept in a PostgreSQL ledger.

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};

use super::api_key::ApiKeyId;
use super::errors::InvalidValue;
use super::user::UserId;

/// Whose consumption a rule counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// Everything a user does, through any key.
    User(UserId),
    /// One key.
    Key(ApiKeyId),
}

impl Subject {
    /// `user:<id>` / `key:<id>`.
    #[must_use]
    pub fn tag(&self) -> String {
        match self {
            Self::User(id) => format!("user:{id}"),
            Self::Key(id) => format!("key:{id}"),
        }
    }
}

/// What a rule counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Admitted requests.
    Requests,
    /// Prompt + completion tokens.
    Tokens,
}

/// The period a rule counts over. Windows are fixed and aligned (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    /// A clock minute.
    Minute,
    /// A clock hour.
    Hour,
    /// A UTC day.
    Day,
    /// A calendar month.
    Month,
    /// Forever.
    Total,
}

impl Window {
    /// The start of the window containing `now`.
    #[must_use]
    pub fn start(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let day = Utc
            .with_ymd_and_hms(now.year(), now.month(), now.day(), 0, 0, 0)
            .single()
            .unwrap_or(now);
        match self {
            Self::Minute => day + Duration::minutes(i64::from(now.hour() * 60 + now.minute())),
            Self::Hour => day + Duration::hours(i64::from(now.hour())),
            Self::Day => day,
            Self::Month => Utc
                .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
                .single()
                .unwrap_or(day),
            Self::Total => DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    /// The start of the next window (`None` for [`Window::Total`]).
    #[must_use]
    pub fn end(self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = self.start(now);
        match self {
            Self::Minute => Some(start + Duration::minutes(1)),
            Self::Hour => Some(start + Duration::hours(1)),
            Self::Day => Some(start + Duration::days(1)),
            Self::Month => {
                let (y, m) = if start.month() == 12 {
                    (start.year() + 1, 1)
                } else {
                    (start.year(), start.month() + 1)
                };
                Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single()
            }
            Self::Total => None,
        }
    }

    /// A stable label of the window containing `now`, used in counter keys.
    #[must_use]
    pub fn label(self, now: DateTime<Utc>) -> String {
        match self {
            Self::Total => "total".to_owned(),
            Self::Minute | Self::Hour | Self::Day | Self::Month => {
                format!("{}:{}", self.as_str(), self.start(now).timestamp())
            }
        }
    }

    /// Name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Month => "month",
            Self::Total => "total",
        }
    }

    /// How long a counter for this window must live (its length plus slack for late settles).
    #[must_use]
    pub fn retention(self) -> std::time::Duration {
        let secs = match self {
            Self::Minute => 120,
            Self::Hour => 2 * 3600,
            Self::Day => 2 * 86_400,
            Self::Month => 33 * 86_400,
            // Rebuilt from the ledger when it lapses.
            Self::Total => 35 * 86_400,
        };
        std::time::Duration::from_secs(secs)
    }
}

/// One cap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitRule {
    /// Stable name shown to clients (`user.requests_per_minute`).
    pub name: String,
    /// Whose consumption.
    pub subject: Subject,
    /// What.
    pub metric: Metric,
    /// Over which window.
    pub window: Window,
    /// The cap.
    pub max: u64,
    /// Quotas (durable: rebuilt from the ledger) vs rate limits (ephemeral).
    pub durable: bool,
}

impl LimitRule {
    /// Quotas (refused as `quota_exceeded`) as opposed to rate limits (`rate_limited`).
    #[must_use]
    pub fn is_quota(&self) -> bool {
        self.name.ends_with("_quota")
    }
}

/// The largest cap a rule may have: caps are stored as PostgreSQL `BIGINT` (`i64`).
pub const MAX_LIMIT: u64 = i64::MAX.unsigned_abs();

/// Why a cap above [`MAX_LIMIT`] is refused.
pub const MAX_LIMIT_MESSAGE: &str = "must be at most 9223372036854775807";

/// The caps an admin sets on a user or a key. `None` means: the platform default for rate limits,
/// unlimited for quotas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuotaPolicy {
    /// Rate limit: requests per minute.
    pub requests_per_minute: Option<u64>,
    /// Rate limit: tokens per minute.
    pub tokens_per_minute: Option<u64>,
    /// Rate limit: requests per hour.
    pub requests_per_hour: Option<u64>,
    /// Rate limit: requests per day.
    pub requests_per_day: Option<u64>,
    /// Quota: tokens per UTC day.
    pub tokens_per_day_quota: Option<u64>,
    /// Quota: tokens per calendar month.
    pub tokens_per_month_quota: Option<u64>,
    /// Quota: tokens ever.
    pub tokens_total_quota: Option<u64>,
    /// Quota: requests per calendar month.
    pub requests_per_month_quota: Option<u64>,
    /// Quota: requests ever.
    pub requests_total_quota: Option<u64>,
}

/// Platform-wide defaults for users without their own rate limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitDefaults {
    /// Requests per minute (None: no cap).
    pub requests_per_minute: Option<u64>,
    /// Tokens per minute (None: no cap).
    pub tokens_per_minute: Option<u64>,
    /// Requests per hour.
    pub requests_per_hour: Option<u64>,
    /// Requests per day.
    pub requests_per_day: Option<u64>,
}

impl QuotaPolicy {
    /// Every field by its name, set or not, in declaration order.
    #[must_use]
    pub fn fields(&self) -> [(&'static str, Option<u64>); 9] {
        [
            ("requests_per_minute", self.requests_per_minute),
            ("tokens_per_minute", self.tokens_per_minute),
            ("requests_per_hour", self.requests_per_hour),
            ("requests_per_day", self.requests_per_day),
            ("tokens_per_day_quota", self.tokens_per_day_quota),
            ("tokens_per_month_quota", self.tokens_per_month_quota),
            ("tokens_total_quota", self.tokens_total_quota),
            ("requests_per_month_quota", self.requests_per_month_quota),
            ("requests_total_quota", self.requests_total_quota),
        ]
    }

    /// Checks that every cap can be stored.
    ///
    /// # Errors
    /// One [`InvalidValue`] per field above [`MAX_LIMIT`].
    pub fn check(&self) -> Result<(), Vec<InvalidValue>> {
        let errors: Vec<InvalidValue> = self
            .fields()
            .into_iter()
            .filter(|(_, value)| value.is_some_and(|v| v > MAX_LIMIT))
            .map(|(field, _)| InvalidValue::new(field, MAX_LIMIT_MESSAGE))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The rules this policy imposes on `subject`; `defaults` fill unset rate limits.
    #[must_use]
    pub fn rules(&self, subject: Subject, defaults: Option<&LimitDefaults>) -> Vec<LimitRule> {
        let scope = match subject {
            Subject::User(_) => "user",
            Subject::Key(_) => "key",
        };
        let fill = |own: Option<u64>, default: fn(&LimitDefaults) -> Option<u64>| {
            own.or_else(|| defaults.and_then(default))
        };
        let specs: [(&str, Option<u64>, Metric, Window, bool); 9] = [
            (
                "requests_per_minute",
                fill(self.requests_per_minute, |d| d.requests_per_minute),
                Metric::Requests,
                Window::Minute,
                false,
            ),
            (
                "tokens_per_minute",
                fill(self.tokens_per_minute, |d| d.tokens_per_minute),
                Metric::Tokens,
                Window::Minute,
                false,
            ),
            (
                "requests_per_hour",
                fill(self.requests_per_hour, |d| d.requests_per_hour),
                Metric::Requests,
                Window::Hour,
                false,
            ),
            (
                "requests_per_day",
                fill(self.requests_per_day, |d| d.requests_per_day),
                Metric::Requests,
                Window::Day,
                true,
            ),
            (
                "tokens_per_day_quota",
                self.tokens_per_day_quota,
                Metric::Tokens,
                Window::Day,
                true,
            ),
            (
                "tokens_per_month_quota",
                self.tokens_per_month_quota,
                Metric::Tokens,
                Window::Month,
                true,
            ),
            (
                "tokens_total_quota",
                self.tokens_total_quota,
                Metric::Tokens,
                Window::Total,
                true,
            ),
            (
                "requests_per_month_quota",
                self.requests_per_month_quota,
                Metric::Requests,
                Window::Month,
                true,
            ),
            (
                "requests_total_quota",
                self.requests_total_quota,
                Metric::Requests,
                Window::Total,
                true,
            ),
        ];
        specs
            .into_iter()
            .filter_map(|(name, max, metric, window, durable)| {
                max.map(|max| LimitRule {
                    name: format!("{scope}.{name}"),
                    subject,
                    metric,
                    window,
                    max,
                    durable,
                })
            })
            .collect()
    }
}

/// What a caller asks to consume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Demand {
    /// Tokens to reserve (an estimate, settled later); `None` for calls that use no tokens, which
    /// then skip token rules.
    pub tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn caps_above_a_bigint_are_refused_by_field() {
        let fits = QuotaPolicy {
            tokens_total_quota: Some(MAX_LIMIT),
            ..QuotaPolicy::default()
        };
        assert_eq!(fits.check(), Ok(()));
        let too_big = QuotaPolicy {
            requests_per_minute: Some(MAX_LIMIT + 1),
            tokens_total_quota: Some(u64::MAX),
            requests_per_hour: Some(5),
            ..QuotaPolicy::default()
        };
        let fields: Vec<&str> = too_big
            .check()
            .unwrap_err()
            .iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["requests_per_minute", "tokens_total_quota"]);
    }

    #[test]
    fn windows_are_aligned_to_the_calendar() {
        let now = at("2026-12-31T23:59:30Z");
        assert_eq!(Window::Minute.start(now), at("2026-12-31T23:59:00Z"));
        assert_eq!(Window::Hour.end(now), Some(at("2027-01-01T00:00:00Z")));
        assert_eq!(Window::Month.start(now), at("2026-12-01T00:00:00Z"));
        assert_eq!(Window::Month.end(now), Some(at("2027-01-01T00:00:00Z")));
        assert_eq!(Window::Total.end(now), None);
        assert_ne!(
            Window::Day.label(now),
            Window::Day.label(at("2027-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn defaults_fill_only_unset_rate_limits() {
        let user = Subject::User(UserId::new());
        let defaults = LimitDefaults {
            requests_per_minute: None,
            tokens_per_minute: None,
            requests_per_hour: Some(50),
            requests_per_day: Some(200),
        };
        let policy = QuotaPolicy {
            requests_per_hour: Some(10),
            tokens_per_month_quota: Some(1000),
            ..QuotaPolicy::default()
        };
        let rules = policy.rules(user, Some(&defaults));
        let names: Vec<(&str, u64)> = rules.iter().map(|r| (r.name.as_str(), r.max)).collect();
        assert_eq!(
            names,
            [
                ("user.requests_per_hour", 10),
                ("user.requests_per_day", 200),
                ("user.tokens_per_month_quota", 1000)
            ]
        );
    }
}
