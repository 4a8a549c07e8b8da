//! Building the running application: database, keys, backends, actors, HTTP server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, SyncArbiter};
use actix_server::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App};
use anyhow::Context;

use crate::auth::{Authenticator, RootKey, TokenValidator, TrustStore, TrustedKeys};
use crate::cache;
use crate::configuration::Settings;
use crate::edge::{self, CertificateStore, Limits, ServerOptions, TrustedProxies};
use crate::events::{EventContext, StorageLocation};
use crate::metadata::{db, GroupCommit, MetadataStore, Schema};
use crate::mover::Mover;
use crate::notifier::{Notifier, StopRelay};
use crate::policy::TenantPolicies;
use crate::reconciler::Reconciler;
use crate::routes;
use crate::service::FileService;
use crate::storage::Storage;
use crate::telemetry;

/// A built, not yet running, valet.
pub struct Application {
    port: u16,
    public_url: url::Url,
    server: Server,
    notifier: Addr<Notifier>,
    shutdown_timeout: Duration,
}

impl Application {
    /// Prepares everything and binds the listener. Must run inside an actix system.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let _ = telemetry::metrics::handle();
        std::fs::create_dir_all(&settings.data_dir).with_context(|| {
            format!(
                "cannot create data directory {}",
                settings.data_dir.display()
            )
        })?;
        let trust = Arc::new(TrustStore::new(trusted_keys(&settings)?, &settings.auth)?);
        // Published key sets are fetched now; one that cannot be is reported by
        // readiness and fetched again later, and valet starts all the same.
        trust.start().await?;

        let pool = db::pool(
            &settings.database_url(),
            settings.database.pool_size,
            settings.database.connect_timeout(),
            settings.database.statement_timeout_ms,
        )?;
        let schema = Schema::new(settings.database.run_migrations);
        // Migrate now when the database is up; if it is not, valet starts anyway,
        // answers 503 meanwhile, and migrates on first contact.
        if settings.database.run_migrations {
            let (pool, source, schema) = (pool.clone(), settings.event_source(), schema.clone());
            let ready = web::block(move || MetadataStore::new(pool, source, schema).check())
                .await
                .map_err(|e| anyhow::anyhow!(e.to_string()))?;
            if let Err(e) = ready {
                tracing::warn!(error = %e, "database unavailable at start; requests answer 503 until it is back");
            }
        }

        let bind = settings.server.bind_addr();
        let listener =
            TcpListener::bind(bind).with_context(|| format!("cannot listen on {bind}"))?;
        let local = listener.local_addr()?;
        let port = local.port();
        // Without a configured public URL: the address actually bound (port 0 resolved).
        let public_url = settings.public_url_for(local)?;

        let storage = Storage::from_settings(&settings, &public_url)?;
        storage.probe_all().await?;

        let settings = Arc::new(settings);
        let authenticator = {
            let shared = trust.clone();
            let validator = SyncArbiter::start(settings.auth.validator_threads, move || {
                TokenValidator::new(shared.clone())
            });
            Authenticator::new(
                validator,
                trust,
                settings.auth.token_cache_capacity,
                settings.auth.token_cache_ttl(),
            )
        };
        // SQLite has one writer at a time; on Postgres a second writer collects the
        // next group while the first commits.
        let writers = if settings.database_url().starts_with("sqlite:") {
            1
        } else {
            2
        };
        let writes = GroupCommit::start(pool.clone(), schema.clone(), writers)?;
        let store = {
            let events = Arc::new(EventContext {
                source: settings.event_source(),
                locations: storage
                    .names()
                    .filter_map(|name| {
                        let container = storage.container(name)?;
                        let location = StorageLocation {
                            field: container.field,
                            name: container.name.to_owned(),
                        };
                        Some((name.to_owned(), location))
                    })
                    .collect(),
            });
            SyncArbiter::start(settings.database.pool_size as usize, move || {
                MetadataStore::with_events(pool.clone(), events.clone(), schema.clone())
            })
        };
        let notifier = Notifier::new(store.clone(), settings.clone()).start();
        let policies = Arc::new(TenantPolicies::new(settings.policy.clone()));
        crate::policy::reload_on_sighup(policies.clone(), settings.source_file.clone());
        let cache = cache::from_settings(&settings.cache)?;
        if cache.is_shared() {
            cache::invalidations::spawn(cache.clone(), store.clone());
        }
        let service = FileService {
            auth: authenticator,
            store,
            writes,
            notifier: notifier.clone(),
            cache,
            storage,
            settings: settings.clone(),
            policies: policies.clone(),
        };

        let json_limit = settings.server.json_limit_bytes;
        let api_description = routes::api_description(settings.uploads.max_upload_bytes)?;
        let service = web::Data::new(service);
        if settings.reconciler.enabled {
            Reconciler::new(service.clone()).start();
        }
        if settings.jobs.enabled {
            Mover::start(service.clone());
        }
        let limits = web::Data::new(Limits::new(
            settings.server.max_in_flight,
            settings.server.request_timeout(),
            settings.server.transfer_timeout(),
        ));
        let proxies = web::Data::new(TrustedProxies::new(
            settings.server.trusted_proxies().to_vec(),
        ));
        let app = move || {
            App::new()
                .wrap(from_fn(routes::problem_for_bare_errors))
                .wrap(from_fn(edge::enforce_limits))
                .wrap(from_fn(telemetry::observe))
                .app_data(service.clone())
                .app_data(limits.clone())
                .app_data(proxies.clone())
                .configure(|cfg| routes::configure(cfg, json_limit, api_description.clone()))
        };
        let options = ServerOptions {
            workers: settings.server.workers,
            // actix's 5 s default answers 408 to connections a busy machine reads
            // late; the overload answer is `max_in_flight`'s 503 problem.
            request_head_timeout: settings.server.request_head_timeout(),
            shutdown_timeout_secs: settings.server.shutdown_timeout_secs,
        };
        let tls = match (&settings.server.tls_cert, &settings.server.tls_key) {
            (Some(cert), Some(key)) => {
                let certificates = CertificateStore::load(cert, key)?;
                let tls = edge::tls::server_config(&settings.server, certificates.clone())?;
                certificates.watch(settings.server.tls_reload_interval());
                Some(tls)
            }
            _ => None,
        };
        // Signals are handled by `run_until_stopped` (SIGINT stops gracefully too).
        let server = edge::server::build(app, listener, tls, &options)?;
        tracing::info!(
            address = %local,
            %public_url,
            tls = settings.tls_enabled(),
            "valet is listening"
        );
        Ok(Self {
            port,
            public_url,
            server,
            notifier,
            shutdown_timeout: settings.server.shutdown_timeout(),
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The base URL signed local URLs point at.
    pub fn public_url(&self) -> &url::Url {
        &self.public_url
    }

    /// Serves until a signal stops it: SIGTERM and SIGINT gracefully (no new
    /// connections; requests in flight finish within `server.shutdown_timeout_secs`),
    /// SIGQUIT at once.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        actix_web::rt::spawn(stop_on_signals(self.server.handle()));
        let served = self.server.await;
        // The HTTP side is done: let the relay record the confirm it waits for.
        let _ = self
            .notifier
            .send(StopRelay {
                deadline: self.shutdown_timeout,
            })
            .await;
        served
    }
}

async fn stop_on_signals(server: actix_web::dev::ServerHandle) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
    ) else {
        tracing::error!("cannot install signal handlers; stop valet with SIGKILL");
        return;
    };
    let (name, graceful) = tokio::select! {
        _ = term.recv() => ("SIGTERM", true),
        _ = int.recv() => ("SIGINT", true),
        _ = quit.recv() => ("SIGQUIT", false),
    };
    if graceful {
        tracing::info!(
            signal = name,
            "stopping: no new connections, finishing requests in flight"
        );
    } else {
        tracing::info!(signal = name, "stopping now");
    }
    server.stop(graceful).await;
}

/// The configured trusted keys, plus the development key when enabled (generated
/// on first start; its public key and how to mint a token are logged, never the
/// private key).
fn trusted_keys(settings: &Settings) -> anyhow::Result<TrustedKeys> {
    let mut keys = TrustedKeys::default();
    for key in &settings.auth.trusted_keys {
        keys.insert(key.id, &key.public_key)?;
    }
    if settings.auth.dev_key {
        let path = settings.dev_key_path();
        let (key, created) = RootKey::load_or_create(&path)?;
        keys.insert(key.id, &key.public_key())?;
        tracing::info!(
            key_id = key.id,
            public_key = %key.public_key(),
            key_file = %path.display(),
            created,
            "trusting the development root key; mint a token with: \
             valet token mint --tenant acme --device dev-42 --ttl 1h"
        );
    }
    Ok(keys)
}
