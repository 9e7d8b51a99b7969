//! The conversation expiry queue's handler (its schedule is in [`crate::schedule`]).

use apalis::prelude::{BoxDynError, Data};
use maas_inference::app::conversations::ConversationService;
use maas_inference::jobs::ConversationExpiryJob;

/// Deletes idle conversations. Idempotent: a second run finds nothing left to delete.
pub(crate) async fn expire(
    job: ConversationExpiryJob,
    conversations: Data<ConversationService>,
) -> Result<(), BoxDynError> {
    let removed = conversations.expire().await?;
    tracing::info!(removed, tick = job.tick, "conversation expiry ran");
    Ok(())
}
