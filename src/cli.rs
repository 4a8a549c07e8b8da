//! The `valet` command line: server, operations and a device-side client.

use std::path::PathBuf;
use std::time::Duration;

use actix::SyncArbiter;
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::auth::jwt_signing::SigningAlgorithm;
use crate::auth::{token, JwtClaims, JwtSigningKey, RootKey};
use crate::client::{ApiClient, UploadOptions};
use crate::configuration::Settings;
use crate::domain::{DeviceId, Principal, ServiceName, TenantId};
use crate::metadata::{db, ListOutbox, MetadataStore, Schema};
use crate::startup::Application;
use crate::telemetry;

/// valet: signed-URL file uploads and downloads for device fleets.
#[derive(Debug, Parser)]
#[command(name = "valet", version, about)]
pub struct Cli {
    /// Configuration file (TOML); `VALET_*` variables override it.
    #[arg(long, global = true, env = "VALET_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve,
    /// Apply pending database migrations (or revert the last one).
    Migrate {
        /// Revert the most recent migration instead.
        #[arg(long)]
        revert: bool,
    },
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Root key tools.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Token tools (a development token service).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Outbox tools.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Upload a file as a device would: hash, create, PUT (or parts), complete;
    /// rerun to continue an interrupted upload in parts.
    Upload(UploadArgs),
    /// Download a file and check its SHA-256; rerun to continue an interrupted one.
    Download(DownloadArgs),
    /// Ask a running valet whether it is alive (or ready); exit status 0 when it is.
    Health(HealthArgs),
    /// Offer an uploaded file to other devices of the tenant.
    Send(SendArgs),
    /// List the transfers offered to this device, newest first (one JSON object a line).
    Inbox(InboxArgs),
    /// Download a transfer's file, check its SHA-256, then accept the transfer.
    Receive(ReceiveArgs),
}

/// Arguments of `valet send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Id of the uploaded file to send.
    pub file_id: String,
    /// Receiving device (repeatable).
    #[arg(long = "to", required = true)]
    pub to: Vec<String>,
    /// Lifetime of the transfer in seconds (default: valet's, 7 days).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub expires_in: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `valet inbox`.
#[derive(Debug, Args)]
pub struct InboxArgs {
    /// Only transfers in which this device's state is this one.
    #[arg(long, value_parser = ["offered", "received", "revoked", "expired"])]
    pub state: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `valet receive`.
#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Transfer id.
    pub transfer_id: String,
    /// Where to write the file (`<output>.part` while in flight).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Report resume decisions.
    #[arg(long, short)]
    pub verbose: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `valet health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// valet's base URL.
    #[arg(long, env = "VALET_API_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Check readiness (`/readyz`: database, cache, storage) instead of liveness.
    #[arg(long)]
    pub ready: bool,
}

/// `valet config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print the effective one, secrets redacted.
    Check,
    /// Print the JSON Schema of the configuration file (for editors and linters).
    Schema,
}

/// `valet keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a new Ed25519 root key pair with a key id or, with `--jwt`, a JWT
    /// signing key pair and its JWK set.
    Generate {
        /// Key file to create (default `valet-root-key-<id>.toml`).
        #[arg(long, short, conflicts_with = "jwt")]
        out: Option<PathBuf>,
        /// Key id (default: random).
        #[arg(long, conflicts_with = "jwt")]
        id: Option<u32>,
        /// Write a JWT signing key to this file instead, and its public JWK set
        /// beside it (`<file stem>.jwks.json`).
        #[arg(long, value_name = "PATH")]
        jwt: Option<PathBuf>,
        /// Algorithm of the JWT signing key.
        #[arg(long, value_enum, default_value = "eddsa", requires = "jwt")]
        algorithm: SigningAlgorithm,
        /// Key id (`kid`) of the JWT signing key (default: random).
        #[arg(long, requires = "jwt")]
        kid: Option<String>,
    },
}

/// `valet token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a device or service token.
    Mint(MintArgs),
}

/// Arguments of `valet token mint`.
#[derive(Debug, Args)]
pub struct MintArgs {
    /// Tenant the token belongs to.
    #[arg(long)]
    pub tenant: String,
    /// Device the token is for.
    #[arg(long, conflicts_with = "service", required_unless_present = "service")]
    pub device: Option<String>,
    /// Tenant service the token is for.
    #[arg(long)]
    pub service: Option<String>,
    /// Lifetime, e.g. `15m`, `1h`, `30d`.
    #[arg(long, default_value = "1h")]
    pub ttl: humantime::Duration,
    /// Root key file (default: the development key in the data directory).
    #[arg(long, conflicts_with = "jwt")]
    pub key: Option<PathBuf>,
    /// Mint a JWT with this signing key file (from `valet keys generate --jwt`)
    /// instead of a biscuit.
    #[arg(long, value_name = "PATH", requires_all = ["issuer", "audience"])]
    pub jwt: Option<PathBuf>,
    /// `iss` of the JWT.
    #[arg(long, requires = "jwt")]
    pub issuer: Option<String>,
    /// `aud` of the JWT.
    #[arg(long, requires = "jwt")]
    pub audience: Option<String>,
    /// A scope granted by the JWT (repeatable).
    #[arg(long = "scope", requires = "jwt")]
    pub scopes: Vec<String>,
}

/// `valet events …`
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Show outbox entries, oldest first (unpublished only unless `--all`).
    List {
        /// Include published entries.
        #[arg(long)]
        all: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

/// Where the API is and who is calling.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// valet's base URL.
    #[arg(long, env = "VALET_API_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Bearer token.
    #[arg(long, env = "VALET_TOKEN", hide_env_values = true)]
    pub token: String,
}

/// Arguments of `valet upload`.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// File to upload (with `--batch`: a directory).
    pub file: PathBuf,
    /// Upload every regular file of the directory into a new batch and commit it,
    /// so they are announced together (`--name` and `--metadata` then describe the
    /// batch); a failed upload abandons the batch.
    #[arg(long)]
    pub batch: bool,
    /// Name to record (default: the file's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Media type (default `application/octet-stream`).
    #[arg(long)]
    pub content_type: Option<String>,
    /// Metadata entries `key=value` (repeatable).
    #[arg(long = "metadata", value_parser = parse_key_value)]
    pub metadata: Vec<(String, String)>,
    /// Upload into this device's root (service tokens).
    #[arg(long)]
    pub device_id: Option<String>,
    /// Upload into the tenant's shared root (service tokens).
    #[arg(long)]
    pub shared: bool,
    /// Upload in parts of this many bytes (any file; by default valet decides:
    /// files over its multipart threshold go in parts).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub part_size: Option<u64>,
    /// Parts sent at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// Report every part sent.
    #[arg(long, short)]
    pub verbose: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `valet download`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// File id.
    pub id: String,
    /// Where to write it (`<output>.part` while in flight).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Report resume decisions.
    #[arg(long, short)]
    pub verbose: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

impl MintArgs {
    /// The tenant and the device or service the token is for.
    fn identity(&self) -> anyhow::Result<(TenantId, Principal)> {
        let tenant = TenantId::parse(&self.tenant)?;
        let principal = match (&self.device, &self.service) {
            (Some(d), None) => Principal::Device(DeviceId::parse(d)?),
            (None, Some(s)) => Principal::Service(ServiceName::parse(s)?),
            _ => bail!("give exactly one of --device or --service"),
        };
        Ok((tenant, principal))
    }
}

/// `valet keys generate --jwt PATH`: the key file, its JWK set beside it, and the
/// configuration that trusts it.
fn generate_jwt_key(
    path: &std::path::Path,
    algorithm: SigningAlgorithm,
    kid: Option<String>,
) -> anyhow::Result<()> {
    let key = JwtSigningKey::generate(algorithm, kid)?;
    let jwks_path = path.with_extension("jwks.json");
    if jwks_path.exists() {
        bail!("{} exists already", jwks_path.display());
    }
    let jwks = key.jwks()?;
    let jwk = key.public_jwk()?;
    key.write(path)?;
    std::fs::write(&jwks_path, serde_json::to_string_pretty(&jwks)? + "\n")
        .with_context(|| format!("cannot write {}", jwks_path.display()))?;
    println!("wrote JWT signing key {} (keep it secret)", path.display());
    println!("wrote its JWK set {}", jwks_path.display());
    println!("kid:       {}", key.kid());
    println!("algorithm: {:?}", key.algorithm());
    println!();
    println!("serve the JWK set and trust it by URL, or inline:");
    println!("[auth.jwt.dev]");
    println!("issuer = \"https://sts.example.com\"");
    println!("audience = \"valet\"");
    println!("keys = [{}]", toml_inline(&jwk)?);
    Ok(())
}

/// A flat JSON object as a TOML inline table.
fn toml_inline(object: &serde_json::Value) -> anyhow::Result<String> {
    let table: toml::Table = serde_json::from_value(object.clone())?;
    Ok(toml::Value::Table(table).to_string())
}

/// `valet token mint --jwt PATH …`: a JWT as the device token service mints them.
fn mint_jwt(args: &MintArgs) -> anyhow::Result<String> {
    let (Some(path), Some(issuer), Some(audience)) = (&args.jwt, &args.issuer, &args.audience)
    else {
        bail!("--jwt needs --issuer and --audience");
    };
    let key = JwtSigningKey::read(path)?;
    let (tenant, principal) = args.identity()?;
    key.mint(&JwtClaims {
        issuer,
        audience,
        tenant: &tenant,
        principal: &principal,
        ttl: args.ttl.into(),
        scopes: &args.scopes,
    })
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

impl Cli {
    /// Sets the process up for the chosen command. The server creates every file
    /// owner-only (umask 077: data directory 0700, database and objects 0600). The
    /// other commands end quietly when their output is closed (`valet config schema
    /// | head -1`) instead of failing on the broken pipe; the server keeps ignoring
    /// SIGPIPE, as a network service must.
    pub fn prepare_process(&self) {
        // SAFETY: both calls only change process-wide settings (no memory is
        // shared with Rust code), before the command starts any work.
        unsafe {
            match self.command {
                Command::Serve => {
                    libc::umask(0o077);
                }
                _ => {
                    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                }
            }
        }
    }

    /// Runs the chosen command.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Serve => {
                let settings = Settings::load(self.config.as_deref())?;
                telemetry::init_logging(&settings.log);
                Application::build(settings)
                    .await?
                    .run_until_stopped()
                    .await?;
                tracing::info!("valet stopped");
            }
            Command::Migrate { revert } => {
                let settings = Settings::load(self.config.as_deref())?;
                let url = settings.database_url();
                let timeout = settings.database.connect_timeout();
                actix_web::web::block(move || -> anyhow::Result<()> {
                    let pool = db::connect(&url, 1, timeout)?;
                    let mut conn = pool.get()?;
                    if revert {
                        println!("reverted {}", db::revert_last_migration(&mut conn)?);
                    } else {
                        let applied = db::run_migrations(&mut conn)?;
                        if applied.is_empty() {
                            println!("database is up to date");
                        }
                        for v in applied {
                            println!("applied {v}");
                        }
                    }
                    Ok(())
                })
                .await??;
            }
            Command::Config(ConfigCommand::Check) => {
                let settings = Settings::load(self.config.as_deref())?;
                print!("{}", settings.effective().to_redacted_toml()?);
                eprintln!("configuration is valid");
            }
            Command::Config(ConfigCommand::Schema) => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&Settings::json_schema())?
                );
            }
            Command::Keys(KeysCommand::Generate {
                jwt: Some(path),
                algorithm,
                kid,
                ..
            }) => generate_jwt_key(&path, algorithm, kid)?,
            Command::Keys(KeysCommand::Generate { out, id, .. }) => {
                let key = RootKey::generate(id);
                let path =
                    out.unwrap_or_else(|| PathBuf::from(format!("valet-root-key-{}.toml", key.id)));
                key.write(&path)?;
                println!("wrote root key pair {} (keep it secret)", path.display());
                println!("key id:     {}", key.id);
                println!("public key: {}", key.public_key());
                println!();
                println!("trust it in valet's configuration:");
                println!("[[auth.trusted_keys]]");
                println!("id = {}", key.id);
                println!("public_key = \"{}\"", key.public_key());
            }
            Command::Token(TokenCommand::Mint(args)) if args.jwt.is_some() => {
                println!("{}", mint_jwt(&args)?);
            }
            Command::Token(TokenCommand::Mint(args)) => {
                let settings = Settings::load(self.config.as_deref())?;
                let path = args.key.clone().unwrap_or_else(|| settings.dev_key_path());
                if args.key.is_none() && !path.exists() {
                    bail!(
                        "no development key at {}: start `valet serve` once, or pass --key",
                        path.display()
                    );
                }
                let key = RootKey::read(&path)?;
                let (tenant, principal) = args.identity()?;
                let ttl: Duration = args.ttl.into();
                println!("{}", token::mint(&key, &tenant, &principal, ttl)?);
            }
            Command::Events(EventsCommand::List { all, limit }) => {
                let settings = Settings::load(self.config.as_deref())?;
                let url = settings.database_url();
                if let Some(path) = url.strip_prefix("sqlite://") {
                    if !std::path::Path::new(path).exists() {
                        bail!("no database at {path}: start `valet serve` (or run `valet migrate`) first");
                    }
                }
                let timeout = settings.database.connect_timeout();
                let pool = actix_web::web::block(move || db::connect(&url, 1, timeout)).await??;
                let source = settings.event_source();
                let store = SyncArbiter::start(1, move || {
                    MetadataStore::new(pool.clone(), source.clone(), Schema::new(false))
                });
                let entries = store
                    .send(ListOutbox {
                        include_published: all,
                        limit,
                    })
                    .await
                    .context("metadata store stopped")??;
                for entry in entries {
                    // Show the event itself as JSON, not as a string inside JSON.
                    let mut line = serde_json::to_value(&entry)?;
                    if let Ok(event) = serde_json::from_str::<serde_json::Value>(&entry.payload) {
                        line["payload"] = event;
                    }
                    println!("{line}");
                }
            }
            Command::Upload(args) => {
                let client =
                    ApiClient::new(&args.client.url, &args.client.token)?.verbose(args.verbose);
                let options = UploadOptions {
                    name: args.name,
                    content_type: args.content_type,
                    metadata: args.metadata.into_iter().collect(),
                    device_id: args.device_id,
                    shared: args.shared,
                    part_size: args.part_size,
                    parallel: usize::from(args.parallel),
                    batch_id: None,
                };
                let file = if args.batch {
                    client.upload_batch(&args.file, options).await?
                } else {
                    client.upload(&args.file, options).await?
                };
                println!("{}", serde_json::to_string_pretty(&file)?);
            }
            Command::Health(args) => {
                let path = if args.ready { "readyz" } else { "healthz" };
                let url = url::Url::parse(&args.url)
                    .and_then(|base| base.join(path))
                    .with_context(|| format!("{:?} is not a URL", args.url))?;
                let response = reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()?
                    .get(url.clone())
                    .send()
                    .await
                    .with_context(|| format!("cannot reach {url}"))?;
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                println!("{body}");
                if !status.is_success() {
                    bail!("{url} answered {status}");
                }
            }
            Command::Send(args) => {
                let client = ApiClient::new(&args.client.url, &args.client.token)?;
                let transfer = client
                    .send_file(&args.file_id, &args.to, args.expires_in)
                    .await?;
                println!("{}", serde_json::to_string_pretty(&transfer)?);
            }
            Command::Inbox(args) => {
                let client = ApiClient::new(&args.client.url, &args.client.token)?;
                for transfer in client.inbox(args.state.as_deref()).await? {
                    println!("{transfer}");
                }
            }
            Command::Receive(args) => {
                let client =
                    ApiClient::new(&args.client.url, &args.client.token)?.verbose(args.verbose);
                let transfer = client.receive(&args.transfer_id, &args.output).await?;
                eprintln!(
                    "received {} ({} bytes, sha256 {}) to {}",
                    transfer["file"]["name"].as_str().unwrap_or_default(),
                    transfer["file"]["size"],
                    transfer["file"]["sha256"].as_str().unwrap_or_default(),
                    args.output.display()
                );
            }
            Command::Download(args) => {
                let client =
                    ApiClient::new(&args.client.url, &args.client.token)?.verbose(args.verbose);
                let file = client.download(&args.id, &args.output).await?;
                eprintln!(
                    "downloaded {} ({} bytes, sha256 {}) to {}",
                    file["name"].as_str().unwrap_or_default(),
                    file["size"],
                    file["sha256"].as_str().unwrap_or_default(),
                    args.output.display()
                );
            }
        }
        Ok(())
    }
}
