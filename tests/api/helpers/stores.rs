//! The object stores tests run on: the local store, a fresh bucket on s3s-fs and a
//! fresh container on Azurite (`scripts/test.sh` starts both and exports their
//! addresses), and a valet ready on each. Only this module builds `BackendSettings`.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use base64::Engine;
use chrono::{SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use valet::configuration::{BackendSettings, ProbeMode, Secret, Settings};
use valet_backends::azblob::AzblobConfig;
use valet_backends::local::LocalConfig;
use valet_backends::s3::S3Config;

use super::{spawn_app_with, TestApp};

const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn env_or_hint(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run scripts/test.sh, which starts s3s-fs and Azurite and exports \
             TEST_S3_ENDPOINT, TEST_S3_ACCESS_KEY, TEST_S3_SECRET_KEY and TEST_AZURITE_ENDPOINT"
        )
    })
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    )
}

/// The local store under the data directory, signing with the generated secret.
pub fn local_backend() -> BackendSettings {
    BackendSettings::Local(LocalConfig::default())
}

/// A fresh bucket on the test S3 server: its name and the settings to use it.
pub async fn s3_bucket() -> (String, BackendSettings) {
    let endpoint = env_or_hint("TEST_S3_ENDPOINT");
    let (key, secret) = (
        env_or_hint("TEST_S3_ACCESS_KEY"),
        env_or_hint("TEST_S3_SECRET_KEY"),
    );
    let name = unique("valet");
    let bucket = Bucket::new(
        url::Url::parse(&endpoint).expect("endpoint"),
        UrlStyle::Path,
        name.clone(),
        "us-east-1",
    )
    .expect("bucket");
    let credentials = Credentials::new(&key, &secret);
    let url = bucket
        .create_bucket(&credentials)
        .sign(Duration::from_secs(60));
    let created = reqwest::Client::new()
        .put(url)
        .send()
        .await
        .expect("create bucket");
    assert!(
        created.status().is_success(),
        "create bucket: {}",
        created.status()
    );
    let settings = BackendSettings::S3(S3Config {
        bucket: name.clone(),
        region: "us-east-1".into(),
        endpoint: Some(endpoint.parse().expect("endpoint URL")),
        public_endpoint: None,
        path_style: true,
        access_key_id: Some(key),
        secret_access_key: Some(Secret::new(secret)),
        session_token: None,
        trust_storage_checksum: true,
        bind_checksum: true,
        probe: ProbeMode::Write,
    });
    (name, settings)
}

/// The bytes of `key` in bucket `bucket` on the test S3 server, or `None` when the
/// store has no such object.
pub async fn s3_object(bucket: &str, key: &str) -> Option<Vec<u8>> {
    let endpoint = env_or_hint("TEST_S3_ENDPOINT");
    let credentials = Credentials::new(
        env_or_hint("TEST_S3_ACCESS_KEY"),
        env_or_hint("TEST_S3_SECRET_KEY"),
    );
    let bucket = Bucket::new(
        url::Url::parse(&endpoint).expect("endpoint"),
        UrlStyle::Path,
        bucket.to_owned(),
        "us-east-1",
    )
    .expect("bucket");
    let url = bucket
        .get_object(Some(&credentials), key)
        .sign(Duration::from_secs(60));
    let response = reqwest::Client::new()
        .get(url)
        .send()
        .await
        .expect("get object");
    match response.status().as_u16() {
        404 => None,
        200 => Some(response.bytes().await.expect("object bytes").to_vec()),
        status => panic!("get object {key}: {status} {:?}", response.text().await),
    }
}

/// An account SAS allowing container creation, per the REST reference.
fn account_sas_for_container_create() -> String {
    let start =
        (Utc::now() - chrono::Duration::minutes(5)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let expiry =
        (Utc::now() + chrono::Duration::minutes(5)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let version = "2022-11-02";
    let to_sign =
        format!("{AZURITE_ACCOUNT}\nc\nb\nc\n{start}\n{expiry}\n\nhttps,http\n{version}\n\n");
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZURITE_KEY)
        .expect("key");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("hmac");
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("sv", version)
        .append_pair("ss", "b")
        .append_pair("srt", "c")
        .append_pair("sp", "c")
        .append_pair("st", &start)
        .append_pair("se", &expiry)
        .append_pair("spr", "https,http")
        .append_pair("sig", &sig)
        .finish()
}

/// A fresh container on the test Azurite: its name and the settings to use it.
pub async fn azure_container() -> (String, BackendSettings) {
    let endpoint = env_or_hint("TEST_AZURITE_ENDPOINT");
    let name = unique("valet");
    let url = format!(
        "{endpoint}/{name}?restype=container&{}",
        account_sas_for_container_create()
    );
    let created = reqwest::Client::new()
        .put(url)
        .header("content-length", "0")
        .send()
        .await
        .expect("create container");
    assert!(
        created.status().is_success(),
        "create container: {} {:?}",
        created.status(),
        created.text().await
    );
    let settings = BackendSettings::Azblob(AzblobConfig {
        account: AZURITE_ACCOUNT.into(),
        container: name.clone(),
        endpoint: Some(endpoint.parse().expect("endpoint URL")),
        public_endpoint: None,
        account_key: Secret::new(AZURITE_KEY),
        probe: ProbeMode::Write,
    });
    (name, settings)
}

/// Configures `backend` under `name` and makes it the default backend.
pub fn use_backend(s: &mut Settings, name: &str, backend: BackendSettings) {
    s.backends.insert(name.into(), backend);
    s.default_backend = name.into();
}

/// A valet storing files in its local store.
pub async fn spawn_on_local() -> TestApp {
    spawn_on_local_with(|_| {}).await
}

/// A valet storing files in a fresh bucket on the test S3 server.
pub async fn spawn_on_s3() -> TestApp {
    spawn_on_s3_with(|_| {}).await
}

/// A valet storing files in a fresh container on the test Azurite.
pub async fn spawn_on_azblob() -> TestApp {
    spawn_on_azblob_with(|_| {}).await
}

/// As [`spawn_on_local`], with more settings changed by `configure`.
pub async fn spawn_on_local_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(|s| {
        use_backend(s, "local", local_backend());
        configure(s);
    })
    .await
}

/// As [`spawn_on_s3`], with more settings changed by `configure`.
pub async fn spawn_on_s3_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let (_, backend) = s3_bucket().await;
    spawn_app_with(|s| {
        use_backend(s, "s3", backend);
        configure(s);
    })
    .await
}

/// As [`spawn_on_azblob`], with more settings changed by `configure`.
pub async fn spawn_on_azblob_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let (_, backend) = azure_container().await;
    spawn_app_with(|s| {
        use_backend(s, "azure", backend);
        configure(s);
    })
    .await
}

/// Runs one test on a runtime of its own, never alongside another test run this way:
/// every test that talks to a cloud store runs so.
///
/// valet's S3 and Azure backends send through one process-wide HTTP client (OpenDAL's),
/// whose pooled connections are driven by the runtime of the test that opened them.
/// Were two such tests to overlap, the first one's runtime ending would break the
/// requests the other was sending on those connections ("error sending request").
/// The turn is released only once the test's runtime is gone.
pub fn run_in_turn(test: impl Future<Output = ()>) {
    static TURN: Mutex<()> = Mutex::new(());
    let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    actix_web::rt::System::new().block_on(test);
}

/// One test per behaviour on every backend, each on a fresh app and run in turn:
/// `on_every_backend!(behaviour, …)` in a module whose behaviours are
/// `async fn(&TestApp)` gives `local::behaviour`, `s3::behaviour` and
/// `azblob::behaviour`; `on_every_backend!(with configure: behaviour, …)` first
/// applies `fn configure(&mut Settings)` to each app. A new backend is one more
/// line in each arm here.
macro_rules! on_every_backend {
    (with $configure:ident: $($behaviour:ident),+ $(,)?) => {
        $crate::helpers::stores::on_every_backend!(@on local, spawn_on_local_with(super::$configure): $($behaviour),+);
        $crate::helpers::stores::on_every_backend!(@on s3, spawn_on_s3_with(super::$configure): $($behaviour),+);
        $crate::helpers::stores::on_every_backend!(@on azblob, spawn_on_azblob_with(super::$configure): $($behaviour),+);
    };
    ($($behaviour:ident),+ $(,)?) => {
        $crate::helpers::stores::on_every_backend!(@on local, spawn_on_local(): $($behaviour),+);
        $crate::helpers::stores::on_every_backend!(@on s3, spawn_on_s3(): $($behaviour),+);
        $crate::helpers::stores::on_every_backend!(@on azblob, spawn_on_azblob(): $($behaviour),+);
    };
    (@on $backend:ident, $spawn:ident $arguments:tt: $($behaviour:ident),+) => {
        mod $backend {
            $(
                #[test]
                fn $behaviour() {
                    $crate::helpers::stores::run_in_turn(async {
                        let app = $crate::helpers::stores::$spawn $arguments.await;
                        super::$behaviour(&app).await;
                    });
                }
            )+
        }
    };
}
pub(crate) use on_every_backend;
