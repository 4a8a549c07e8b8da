//! The `Notifier` actor: relays outbox events to subscribers. With no message
//! broker configured, events stay in the outbox (`valet events list` shows them)
//! and the notifier only keeps the outbox metrics current.

use std::time::Duration;

use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, WrapFuture};

use crate::metadata::{MetadataStore, OutboxDepth};
use crate::telemetry::metrics;

/// How often the outbox gauges are refreshed even without new events.
const REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// Watches the outbox.
pub struct Notifier {
    store: Addr<MetadataStore>,
}

impl Notifier {
    /// A notifier reading the outbox through `store`.
    pub fn new(store: Addr<MetadataStore>) -> Self {
        Self { store }
    }

    fn refresh(&mut self, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        ctx.spawn(
            async move { store.send(OutboxDepth).await }
                .into_actor(self)
                .map(|result, _, _| {
                    if let Ok(Ok(depth)) = result {
                        metrics::set_outbox_depth(depth);
                    }
                }),
        );
    }
}

impl Actor for Notifier {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        tracing::info!(
            "no message broker configured: file events are kept in the outbox \
             (list them with `valet events list`)"
        );
        self.refresh(ctx);
        ctx.run_interval(REFRESH_INTERVAL, |act, ctx| act.refresh(ctx));
    }
}

/// A request appended to the outbox; sent after the transaction commits.
#[derive(Message)]
#[rtype(result = "()")]
pub struct OutboxAppended;

impl Handler<OutboxAppended> for Notifier {
    type Result = ();
    fn handle(&mut self, _: OutboxAppended, ctx: &mut Self::Context) {
        self.refresh(ctx);
    }
}
