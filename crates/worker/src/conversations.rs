//! The conversation expiry queue: a schedule that enqueues the job, and its handler.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{Data, Error};
use maas_inference::app::conversations::ConversationService;
use maas_inference::jobs::ConversationExpiryJob;
use maas_shared::jobs::JobProducer;

/// Enqueues an expiry run now and then every `every`, for as long as the process runs.
pub(crate) fn schedule(producer: JobProducer<ConversationExpiryJob>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(err) = producer.push(ConversationExpiryJob {}).await {
                tracing::warn!(error = %err, "could not enqueue conversation expiry");
            }
        }
    });
}

/// Deletes idle conversations.
pub(crate) async fn expire(
    _job: ConversationExpiryJob,
    conversations: Data<ConversationService>,
) -> Result<(), Error> {
    let removed = conversations
        .expire()
        .await
        .map_err(|e| Error::Failed(Arc::new(Box::new(e))))?;
    if removed > 0 {
        tracing::info!(removed, "expired idle conversations");
    }
    Ok(())
}
