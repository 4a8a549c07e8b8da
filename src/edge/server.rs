//! The HTTP(S) server: actix-server accepting connections, rustls when configured,
//! and actix-http's HTTP/1.1 service over each connection wrapped in a
//! [`ProblemStream`], so the codec's own error answers are problem documents too.
//! (`actix_web::HttpServer` does the same assembly but cannot wrap connections.)

use std::fmt;
use std::net::TcpListener;
use std::time::Duration;

use actix_http::body::{BoxBody, MessageBody};
use actix_http::{HttpServiceBuilder, Protocol, Request, Response};
use actix_server::{GracefulShutdownSignal, Server, ServerBuilder};
use actix_service::{
    fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt,
};
use actix_tls::accept::rustls_0_23::{reexports::ServerConfig, Acceptor, TlsStream};
use actix_web::dev::{AppConfig, Extensions};
use actix_web::rt::net::TcpStream;

use super::protocol_errors::ProblemStream;
use super::tls::VerifiedClientCertificate;

/// How connections are served.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Worker threads (actix's default, one per core, when unset).
    pub workers: Option<usize>,
    /// How long a request head may take to arrive.
    pub request_head_timeout: Duration,
    /// Seconds a graceful stop waits for requests in flight.
    pub shutdown_timeout_secs: u64,
}

/// Marks a connection that arrived over TLS (see `client_address`).
#[derive(Debug, Clone, Copy)]
pub struct TlsConnection;

/// Builds the server for `listener` (HTTPS with `tls`), serving the app `factory`
/// makes on each worker. Signals are left to the caller.
pub fn build<F, I, S, B>(
    factory: F,
    listener: TcpListener,
    tls: Option<ServerConfig>,
    options: &ServerOptions,
) -> std::io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let mut builder = ServerBuilder::default()
        .shutdown_timeout(options.shutdown_timeout_secs)
        .disable_signals();
    if let Some(workers) = options.workers {
        builder = builder.workers(workers);
    }
    let shutdown = builder.graceful_shutdown_signal();
    let head_timeout = options.request_head_timeout;
    // The app's own errors become responses, as `HttpServer` does.
    let app = move || {
        factory()
            .into_factory()
            .map_err(|err: S::Error| err.into().error_response())
    };
    let builder = match tls {
        Some(tls) => builder.listen("valet-https", listener, move || {
            Acceptor::new(tls.clone())
                .map_init_err(|_| ())
                .map_err(|_| ())
                .and_then(fn_service(|io: TlsStream<TcpStream>| async move {
                    let peer = io.get_ref().0.peer_addr().ok();
                    Ok::<_, ()>((ProblemStream::new(io), Protocol::Http1, peer))
                }))
                .and_then(
                    http_service(head_timeout, &shutdown)
                        .on_connect_ext(mark_tls_connection)
                        .finish(map_config(app(), |_| AppConfig::default()))
                        .map_err(|_| ()),
                )
        })?,
        None => builder.listen("valet-http", listener, move || {
            fn_service(|io: TcpStream| async move {
                let peer = io.peer_addr().ok();
                Ok((ProblemStream::new(io), Protocol::Http1, peer))
            })
            .and_then(
                http_service(head_timeout, &shutdown)
                    .finish(map_config(app(), |_| AppConfig::default())),
            )
        })?,
    };
    Ok(builder.run())
}

/// The HTTP/1.1 service's settings. Keep-alive connections close when a graceful
/// stop begins.
fn http_service<T, S>(
    head_timeout: Duration,
    shutdown: &GracefulShutdownSignal,
) -> HttpServiceBuilder<T, S>
where
    S: ServiceFactory<Request, Config = ()>,
    S::Error: Into<Response<BoxBody>> + 'static,
    S::InitError: fmt::Debug,
    <S::Service as actix_service::Service<Request>>::Future: 'static,
{
    let shutdown = shutdown.clone();
    HttpServiceBuilder::default()
        .client_request_timeout(head_timeout)
        .graceful_shutdown_signal(move || {
            let shutdown = shutdown.clone();
            async move { shutdown.notified().await }
        })
}

/// Records that the connection is TLS, and whether the client presented a
/// certificate the configured client CA verified (rustls only accepts verified ones).
fn mark_tls_connection(io: &ProblemStream<TlsStream<TcpStream>>, extensions: &mut Extensions) {
    extensions.insert(TlsConnection);
    let (_, session) = io.get_ref().get_ref();
    if session.peer_certificates().is_some_and(|c| !c.is_empty()) {
        extensions.insert(VerifiedClientCertificate);
    }
}
