//! Conversations: a user's chat history, fed back to the model as context and exportable.

use chrono::{DateTime, Utc};
use maas_shared::text::has_nul;
use maas_user::contract::UserId;
use uuid::Uuid;

use super::errors::InvalidValue;

maas_shared::define_id!(
    /// Identifies a conversation.
    ConversationId
);

/// Who said a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageRole {
    /// System prompt.
    System,
    /// The person.
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
}

impl MessageRole {
    /// The OpenAI name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
        }
    }

    /// Reads an OpenAI role name.
    ///
    /// # Errors
    /// [`InvalidValue`] naming `role`.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw {
            "system" => Ok(Self::System),
            "user" => Ok(Self::User),
            "assistant" => Ok(Self::Assistant),
            "tool" => Ok(Self::Tool),
            _ => Err(InvalidValue::new("role", "system, user, assistant or tool")),
        }
    }
}

/// A conversation's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    id: ConversationId,
    owner: UserId,
    title: String,
    model: Option<String>,
    created_at: DateTime<Utc>,
    last_activity_at: DateTime<Utc>,
}

impl Conversation {
    /// A new conversation of `owner`, titled with an already validated title ([`parse_title`]).
    #[must_use]
    pub fn start(owner: UserId, title: String, model: Option<String>, at: DateTime<Utc>) -> Self {
        Self {
            id: ConversationId::new(),
            owner,
            title,
            model,
            created_at: at,
            last_activity_at: at,
        }
    }

    /// A conversation as stored (repositories only).
    #[must_use]
    pub fn restore(
        id: ConversationId,
        owner: UserId,
        title: String,
        model: Option<String>,
        created_at: DateTime<Utc>,
        last_activity_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            owner,
            title,
            model,
            created_at,
            last_activity_at,
        }
    }

    /// Renames it (the title already validated), which counts as activity.
    pub fn rename(&mut self, title: String, at: DateTime<Utc>) {
        self.title = title;
        self.last_activity_at = self.last_activity_at.max(at);
    }

    /// Id.
    #[must_use]
    pub fn id(&self) -> ConversationId {
        self.id
    }

    /// Owner.
    #[must_use]
    pub fn owner(&self) -> UserId {
        self.owner
    }

    /// Title.
    #[must_use]
    pub fn title(&self) -> &str {
        &self.title
    }

    /// Model it is mostly held with, if set.
    #[must_use]
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// Created.
    #[must_use]
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    /// Last message or change; the conversation expires after a period without one.
    #[must_use]
    pub fn last_activity_at(&self) -> DateTime<Utc> {
        self.last_activity_at
    }
}

/// One message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Id (time-ordered).
    pub id: Uuid,
    /// Conversation.
    pub conversation_id: ConversationId,
    /// Speaker.
    pub role: MessageRole,
    /// Text.
    pub content: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// One exported row: a message with its conversation's title.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportRow {
    /// Conversation.
    pub conversation_id: Uuid,
    /// Its title.
    pub title: String,
    /// Message id.
    pub message_id: Uuid,
    /// Speaker.
    pub role: String,
    /// Text.
    pub content: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Longest title.
pub const MAX_TITLE: usize = 200;
/// Longest stored message.
pub const MAX_CONTENT: usize = 1_000_000;

/// Why text with a NUL character is refused (PostgreSQL cannot store it).
const NUL_MESSAGE: &str = "must not contain the NUL character (U+0000)";

/// Text as it can be stored: a NUL character (which PostgreSQL refuses) becomes U+FFFD. For
/// text the platform did not get from the caller (an upstream's answer), so cannot refuse.
#[must_use]
pub fn storable(text: &str) -> String {
    text.replace(maas_shared::text::NUL, "\u{FFFD}")
}

/// Validates a title (1–200 characters once trimmed, no NUL).
///
/// # Errors
/// [`InvalidValue`] naming `title`.
pub fn parse_title(raw: &str) -> Result<String, InvalidValue> {
    let title = raw.trim();
    if has_nul(title) {
        return Err(InvalidValue::new("title", NUL_MESSAGE));
    }
    if (1..=MAX_TITLE).contains(&title.chars().count()) {
        Ok(title.to_owned())
    } else {
        Err(InvalidValue::new("title", "1 to 200 characters"))
    }
}

/// Validates message content (at most 1,000,000 bytes, no NUL).
///
/// # Errors
/// [`InvalidValue`] naming `content`.
pub fn parse_content(raw: &str) -> Result<String, InvalidValue> {
    if has_nul(raw) {
        return Err(InvalidValue::new("content", NUL_MESSAGE));
    }
    if raw.len() <= MAX_CONTENT {
        Ok(raw.to_owned())
    } else {
        Err(InvalidValue::new("content", "at most 1,000,000 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_with_a_nul_is_refused_from_callers_and_replaced_from_upstreams() {
        assert_eq!(parse_title("a\u{0}b").unwrap_err().field, "title");
        assert_eq!(parse_content("a\u{0}b").unwrap_err().field, "content");
        assert_eq!(parse_content("fine").unwrap(), "fine");
        assert_eq!(storable("a\u{0}b"), "a\u{FFFD}b");
        assert_eq!(storable("plain"), "plain");
    }
}
