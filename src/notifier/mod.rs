//! Relaying outbox events to the message broker. This folder holds the
//! `Notifier` actor (here), the publishing loop (`relay`), the `EventSink` trait a
//! destination implements (`sink`), its RabbitMQ implementation (`amqp`) and the
//! routing keys (`routing`). With no broker configured, events stay in the outbox
//! (`valet events list` shows them), which the actor says once at start. Either
//! way it keeps the outbox metrics current.

pub mod amqp;
pub mod relay;
pub mod routing;
pub mod sink;

use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, ResponseFuture,
    WrapFuture,
};
use chrono::Utc;
use tokio::sync::{oneshot, watch, Notify};

use crate::configuration::Settings;
use crate::metadata::{MetadataStore, OutboxBacklog};
use crate::telemetry::metrics;
use amqp::AmqpSink;
use relay::{BrokerHealth, Relay};

/// How often the outbox gauges are refreshed even without new events.
const REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// Watches the outbox and, with a broker configured, runs the relay.
pub struct Notifier {
    store: Addr<MetadataStore>,
    settings: Arc<Settings>,
    wake: Arc<Notify>,
    stopping: watch::Sender<bool>,
    relay_done: Option<oneshot::Receiver<()>>,
    health: Arc<BrokerHealth>,
}

impl Notifier {
    /// A notifier over the outbox of `store`.
    pub fn new(store: Addr<MetadataStore>, settings: Arc<Settings>) -> Self {
        Self {
            store,
            settings,
            wake: Arc::new(Notify::new()),
            stopping: watch::channel(false).0,
            relay_done: None,
            health: Arc::new(BrokerHealth::default()),
        }
    }

    fn refresh(&mut self, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        ctx.spawn(
            async move { store.send(OutboxBacklog).await }
                .into_actor(self)
                .map(|result, _, _| {
                    if let Ok(Ok((depth, oldest))) = result {
                        let age = oldest
                            .map_or(0.0, |t| (Utc::now() - t).num_milliseconds() as f64 / 1e3);
                        metrics::set_outbox_backlog(depth, age.max(0.0));
                    }
                }),
        );
    }
}

impl Actor for Notifier {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        match &self.settings.amqp.url {
            None => tracing::info!(
                "no message broker configured: file events are kept in the outbox \
                 (list them with `valet events list`)"
            ),
            Some(url) => {
                let (done, relay_done) = oneshot::channel();
                self.relay_done = Some(relay_done);
                let sink = AmqpSink::new(
                    self.settings.amqp.clone(),
                    url.clone(),
                    self.settings.amqp_connection_name(),
                );
                let relay = Relay::new(
                    sink,
                    self.store.clone(),
                    self.settings.amqp.clone(),
                    self.wake.clone(),
                    self.stopping.subscribe(),
                    self.health.clone(),
                );
                actix_web::rt::spawn(async move {
                    relay.run().await;
                    let _ = done.send(());
                });
            }
        }
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
        self.wake.notify_one();
        if self.settings.amqp.url.is_none() {
            self.refresh(ctx);
        }
    }
}

/// The broker's state for readiness: `None` when no broker is configured.
#[derive(Message)]
#[rtype(result = "Option<Result<(), String>>")]
pub struct BrokerStatus;

impl Handler<BrokerStatus> for Notifier {
    type Result = Option<Result<(), String>>;
    fn handle(&mut self, _: BrokerStatus, _: &mut Self::Context) -> Self::Result {
        self.settings
            .amqp
            .url
            .as_ref()
            .map(|_| self.health.status())
    }
}

/// Stops the relay after the confirm in flight (if any) is recorded; waits at
/// most `deadline`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopRelay {
    /// Longest wait.
    pub deadline: Duration,
}

impl Handler<StopRelay> for Notifier {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, msg: StopRelay, _: &mut Self::Context) -> Self::Result {
        let _ = self.stopping.send(true);
        let done = self.relay_done.take();
        Box::pin(async move {
            if let Some(done) = done {
                if tokio::time::timeout(msg.deadline, done).await.is_err() {
                    tracing::warn!("the outbox relay did not stop in time; unconfirmed events will be sent again");
                }
            }
        })
    }
}
