//! A key document fetched by URL (a JWKS, the biscuit root key set): fetched at
//! start, kept, and fetched again on schedule — when `Cache-Control: max-age` says,
//! bounded between the source's minimum and maximum refresh intervals — and when a
//! token names a key it does not hold. Fetches are never closer together than the
//! minimum interval, so tokens with made-up key ids cannot make valet hammer the
//! publisher. A failed fetch keeps the keys already held.
//!
//! Every fetch runs in the source's own task (one runtime, one HTTP client); a
//! request that needs fresh keys asks that task and waits for its answer.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use futures_util::StreamExt;
use tokio::sync::{watch, Notify};

use crate::telemetry::metrics;

/// Longest a fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest document accepted.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// A parsed key document.
pub trait KeyDocument: Default + Send + Sync + 'static {
    /// Parses a fetched document; entries valet cannot use are skipped (and
    /// logged), a document that is not one at all is an error.
    fn parse(source: &str, body: &[u8]) -> anyhow::Result<Self>;

    /// How many usable keys it holds.
    fn key_count(&self) -> usize;
}

/// A key document published at a URL, and the state of its fetching.
pub struct KeySource<D> {
    name: String,
    url: url::Url,
    min_refresh: Duration,
    max_refresh: Duration,
    current: ArcSwap<D>,
    health: Mutex<Health>,
    gate: Mutex<Gate>,
    wake: Notify,
    completed: watch::Sender<u64>,
}

/// Whether the last fetch worked, for readiness.
enum Health {
    NotFetched,
    Fetched,
    Failed(String),
}

/// Fetch bookkeeping: one fetch at a time, never two starts within `min_refresh`.
#[derive(Default)]
struct Gate {
    in_flight: bool,
    last_started: Option<Instant>,
    attempts: u64,
}

impl<D: KeyDocument> KeySource<D> {
    /// A source named `name` (`key_set`, `jwks:<issuer>`) holding no keys yet.
    pub fn new(name: String, url: url::Url, min_refresh: Duration, max_refresh: Duration) -> Self {
        Self {
            name,
            url,
            min_refresh,
            max_refresh: max_refresh.max(min_refresh),
            current: ArcSwap::from_pointee(D::default()),
            health: Mutex::new(Health::NotFetched),
            gate: Mutex::new(Gate::default()),
            wake: Notify::new(),
            completed: watch::channel(0).0,
        }
    }

    /// Its name in readiness and metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The keys held now.
    pub fn keys(&self) -> Guard<Arc<D>> {
        self.current.load()
    }

    /// `Err(why)` when the keys could not be fetched (the last attempt failed, or
    /// none has finished yet); keys fetched before still verify meanwhile.
    pub fn status(&self) -> Result<(), String> {
        match &*lock(&self.health) {
            Health::Fetched => Ok(()),
            Health::NotFetched => Err("not fetched yet".into()),
            Health::Failed(why) => Err(format!(
                "{why} (holding {} keys fetched before)",
                self.keys().key_count()
            )),
        }
    }

    /// Fetches the document now (valet's start: the caller waits, and goes on
    /// whatever the outcome), then keeps it fresh in a task of its own.
    pub async fn start(self: Arc<Self>, client: reqwest::Client) {
        self.begin(&mut lock(&self.gate));
        let next = self.fetch_and_publish(&client).await;
        actix_web::rt::spawn(self.keep_fresh(client, next));
    }

    /// Asks for a fetch because a token named a key this source does not hold, and
    /// waits for it. `false` (at once) when the last fetch started less than the
    /// minimum interval ago: the caller's answer stands. `true` once a fetch has
    /// finished, whatever its outcome: the caller looks again.
    pub async fn refresh_for_unknown_key(&self) -> bool {
        let target = {
            let mut gate = lock(&self.gate);
            if !gate.in_flight {
                let recent = gate
                    .last_started
                    .is_some_and(|at| at.elapsed() < self.min_refresh);
                if recent {
                    return false;
                }
                self.begin(&mut gate);
                self.wake.notify_one();
            }
            gate.attempts + 1
        };
        let mut completed = self.completed.subscribe();
        let finished = tokio::time::timeout(
            FETCH_TIMEOUT + Duration::from_secs(1),
            completed.wait_for(|attempts| *attempts >= target),
        )
        .await;
        matches!(finished, Ok(Ok(_)))
    }

    fn begin(&self, gate: &mut Gate) {
        gate.in_flight = true;
        gate.last_started = Some(Instant::now());
    }

    /// The refresh loop: fetches when due (`next`) or when asked.
    async fn keep_fresh(self: Arc<Self>, client: reqwest::Client, mut next: Instant) {
        loop {
            let asked = tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => false,
                _ = self.wake.notified() => true,
            };
            {
                let mut gate = lock(&self.gate);
                if !gate.in_flight {
                    if asked {
                        // A wake-up left over from a fetch already done.
                        continue;
                    }
                    self.begin(&mut gate);
                }
            }
            next = self.fetch_and_publish(&client).await;
        }
    }

    /// One fetch: on success the new keys replace the old ones; either way the
    /// waiting callers are told. Returns when the next scheduled fetch is due.
    async fn fetch_and_publish(&self, client: &reqwest::Client) -> Instant {
        let outcome = self.fetch(client).await;
        let now = Instant::now();
        let next = match outcome {
            Ok((document, max_age)) => {
                let keys = document.key_count();
                let before = self.current.swap(Arc::new(document)).key_count();
                let recovered = !matches!(
                    std::mem::replace(&mut *lock(&self.health), Health::Fetched),
                    Health::Fetched
                );
                metrics::record_key_fetch(&self.name, "ok", Some(keys));
                if recovered || keys != before {
                    tracing::info!(source = %self.name, keys, "fetched keys");
                } else {
                    tracing::debug!(source = %self.name, keys, "fetched keys");
                }
                let interval = max_age
                    .unwrap_or(self.max_refresh)
                    .clamp(self.min_refresh, self.max_refresh);
                now + interval
            }
            Err(why) => {
                metrics::record_key_fetch(&self.name, "failed", None);
                tracing::warn!(
                    source = %self.name,
                    url = %display_url(&self.url),
                    error = %why,
                    "cannot fetch keys; keeping those held"
                );
                *lock(&self.health) = Health::Failed(why);
                now + self.min_refresh
            }
        };
        let attempts = {
            let mut gate = lock(&self.gate);
            gate.in_flight = false;
            gate.attempts += 1;
            gate.attempts
        };
        self.completed.send_replace(attempts);
        next
    }

    /// GETs and parses the document; `Err(why)` for the log and readiness.
    async fn fetch(&self, client: &reqwest::Client) -> Result<(D, Option<Duration>), String> {
        let response = client
            .get(self.url.clone())
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| describe(&e.without_url()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the key document answered {status}"));
        }
        let max_age = max_age(response.headers());
        if response
            .content_length()
            .is_some_and(|length| length > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(format!(
                "the key document is larger than {MAX_DOCUMENT_BYTES} bytes"
            ));
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| describe(&e.without_url()))?;
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!(
                    "the key document is larger than {MAX_DOCUMENT_BYTES} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let document = D::parse(&self.name, &body)
            .map_err(|e| format!("the key document is unusable: {e:#}"))?;
        Ok((document, max_age))
    }
}

/// The state stays consistent under every lock holder (plain assignments), so a
/// poisoned lock is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An error and its causes on one line ("error sending request: … : connection refused").
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// The URL without its query and credentials, for the log.
fn display_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    shown.to_string()
}

/// `max-age` of a `Cache-Control` header; `no-cache`/`no-store` count as 0 (the
/// minimum interval then applies).
fn max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    value.split(',').find_map(|directive| {
        let directive = directive.trim();
        if directive.eq_ignore_ascii_case("no-cache") || directive.eq_ignore_ascii_case("no-store")
        {
            return Some(Duration::ZERO);
        }
        let (name, seconds) = directive.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| seconds.trim().trim_matches('"').parse().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, CACHE_CONTROL};

    fn cache_control(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(CACHE_CONTROL, HeaderValue::from_str(value).unwrap());
        max_age(&headers)
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            cache_control("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(cache_control("Max-Age = 7"), Some(Duration::from_secs(7)));
        assert_eq!(cache_control("no-store"), Some(Duration::ZERO));
        assert_eq!(cache_control("public"), None);
        assert_eq!(cache_control("max-age=soon"), None);
        assert_eq!(max_age(&HeaderMap::new()), None);
    }

    #[test]
    fn logged_urls_carry_no_credentials_or_query() {
        let url = url::Url::parse("https://user:pw@sts.example.com/jwks.json?sig=abc").unwrap();
        assert_eq!(display_url(&url), "https://sts.example.com/jwks.json");
    }
}
