//! A key publisher for tests — a device token service's JWKS endpoint or a biscuit
//! key set — on a random local port: it serves whatever document the test
//! publishes, can be taken down (answering 503), and counts the fetches.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::Value;

/// What the server answers, shared with the test.
struct Published {
    document: Mutex<Value>,
    up: AtomicBool,
    fetches: AtomicUsize,
    max_age: Mutex<Option<u64>>,
}

/// A running key publisher.
pub struct KeyServer {
    /// The document's URL.
    pub url: String,
    published: Arc<Published>,
}

impl KeyServer {
    /// Serves `document` at `<url>` (`/keys.json`).
    pub async fn start(document: Value) -> Self {
        let published = Arc::new(Published {
            document: Mutex::new(document),
            up: AtomicBool::new(true),
            fetches: AtomicUsize::new(0),
            max_age: Mutex::new(None),
        });
        let shared = web::Data::from(published.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .route("/keys.json", web::get().to(serve))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("key server binds");
        let port = server.addrs()[0].port();
        actix_web::rt::spawn(server.run());
        Self {
            url: format!("http://127.0.0.1:{port}/keys.json"),
            published,
        }
    }

    /// Serves `document` from now on.
    pub fn publish(&self, document: Value) {
        *self
            .published
            .document
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = document;
    }

    /// Answers 503 (`false`) or the document (`true`) from now on.
    pub fn set_up(&self, up: bool) {
        self.published.up.store(up, Ordering::SeqCst);
    }

    /// Sends `Cache-Control: max-age=<secs>` from now on.
    pub fn set_max_age(&self, secs: Option<u64>) {
        *self
            .published
            .max_age
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = secs;
    }

    /// Requests received so far (answered or not).
    pub fn fetches(&self) -> usize {
        self.published.fetches.load(Ordering::SeqCst)
    }
}

async fn serve(published: web::Data<Published>) -> HttpResponse {
    published.fetches.fetch_add(1, Ordering::SeqCst);
    if !published.up.load(Ordering::SeqCst) {
        return HttpResponse::ServiceUnavailable().finish();
    }
    let document = published
        .document
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let max_age = *published
        .max_age
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut response = HttpResponse::Ok();
    if let Some(secs) = max_age {
        response.insert_header(("cache-control", format!("max-age={secs}")));
    }
    response.json(document)
}
