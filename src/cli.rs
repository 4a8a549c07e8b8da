//! The `valet` command line: server, operations and a device-side client.

use std::path::PathBuf;
use std::time::Duration;

use actix::SyncArbiter;
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::auth::jwt_signing::SigningAlgorithm;
use crate::auth::{token, JwtClaims, JwtSigningKey, RootKey};
use crate::client::jobs::{self, CreatedJobs, JobSelector};
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
    /// Copy or move files between storage backends, and follow the jobs doing it
    /// (service tokens).
    #[command(subcommand)]
    Jobs(JobsCommand),
}

/// `valet jobs …`
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Move files to another backend: copied, verified, then switched over; the
    /// source object is deleted after a grace period.
    Move(JobCreateArgs),
    /// Copy files to another backend as replicas; they stay where they are.
    Copy(JobCreateArgs),
    /// List the tenant's jobs, newest first, one line each: id, kind, file,
    /// source → target, state, bytes done/total, attempts.
    List(JobListArgs),
    /// Print one job as JSON.
    Show(JobIdArgs),
    /// Print a job's log, one line per step.
    Log(JobIdArgs),
    /// Cancel a job that has not finished.
    Cancel(JobIdArgs),
}

/// Arguments of `valet jobs move` and `valet jobs copy`.
#[derive(Debug, Args)]
pub struct JobCreateArgs {
    /// Tenant whose files are meant; must be the token's tenant (checked).
    #[arg(long, required_unless_present = "file")]
    pub tenant: Option<String>,
    /// Only this file.
    #[arg(long, value_name = "FILE_ID", conflicts_with_all = ["device_id", "from", "created_before"])]
    pub file: Option<String>,
    /// Backend the files go to.
    #[arg(long = "to", value_name = "BACKEND")]
    pub to: String,
    /// Only files of this device's root.
    #[arg(long)]
    pub device_id: Option<String>,
    /// Only files now on this backend.
    #[arg(long, value_name = "BACKEND")]
    pub from: Option<String>,
    /// Only files created before this instant (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    pub created_before: Option<String>,
    /// Wait until every job has finished, reporting progress on stderr; fail if
    /// any failed or was cancelled.
    #[arg(long)]
    pub wait: bool,
    /// Seconds between two looks at the jobs with `--wait`.
    #[arg(long, default_value_t = 1.0, value_parser = parse_interval, requires = "wait")]
    pub poll_interval: f64,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of `valet jobs list`.
#[derive(Debug, Args)]
pub struct JobListArgs {
    /// Only jobs in this state.
    #[arg(long, value_parser = crate::client::jobs::JOB_STATES)]
    pub state: Option<String>,
    /// Only the jobs of this group.
    #[arg(long)]
    pub group_id: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Arguments of the `valet jobs` commands about one job.
#[derive(Debug, Args)]
pub struct JobIdArgs {
    /// Job id.
    pub id: String,
    #[command(flatten)]
    pub client: ClientArgs,
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

/// An RFC 3339 instant, passed on in UTC.
fn parse_rfc3339(s: &str) -> Result<String, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        })
        .map_err(|e| format!("{s:?} is not an RFC 3339 instant ({e}), e.g. 2026-12-01T00:00:00Z"))
}

/// A polling interval in seconds: 0.05 to 3600.
fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(secs) if (0.05..=3600.0).contains(&secs) => Ok(secs),
        _ => Err(format!(
            "{s:?} is not a number of seconds from 0.05 to 3600"
        )),
    }
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
            Command::Jobs(command) => run_jobs(command).await?,
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

/// `valet jobs …`.
async fn run_jobs(command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::Move(args) => create_jobs("move", args).await,
        JobsCommand::Copy(args) => create_jobs("copy", args).await,
        JobsCommand::List(args) => {
            let client = ApiClient::new(&args.client.url, &args.client.token)?;
            let listed = client
                .jobs(args.state.as_deref(), args.group_id.as_deref())
                .await?;
            for job in &listed {
                println!("{}", jobs::job_line(job));
            }
            Ok(())
        }
        JobsCommand::Show(args) => {
            let client = ApiClient::new(&args.client.url, &args.client.token)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&client.job(&args.id).await?)?
            );
            Ok(())
        }
        JobsCommand::Log(args) => {
            let client = ApiClient::new(&args.client.url, &args.client.token)?;
            let log = client.job_log(&args.id).await?;
            print!("{log}");
            if !log.is_empty() && !log.ends_with('\n') {
                println!();
            }
            Ok(())
        }
        JobsCommand::Cancel(args) => {
            let client = ApiClient::new(&args.client.url, &args.client.token)?;
            let job = client.cancel_job(&args.id).await?;
            println!("{}", jobs::job_line(&job));
            Ok(())
        }
    }
}

/// `valet jobs move|copy`: creates the jobs, checks they are the intended tenant's,
/// and with `--wait` follows them to the end.
async fn create_jobs(kind: &str, args: JobCreateArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.client.url, &args.client.token)?;
    // Refuse before creating anything when the token's tenant shows on its files;
    // the answer's jobs are checked again below, for a tenant with no file yet.
    let mut confirmed = false;
    if let Some(intended) = &args.tenant {
        if let Some(actual) = client.token_tenant(args.file.as_deref()).await {
            if &actual != intended {
                bail!(wrong_tenant(intended, &actual, "nothing was created"));
            }
            confirmed = true;
        }
    }
    let created = match &args.file {
        Some(file_id) => client.create_file_job(kind, file_id, &args.to).await?,
        None => {
            let selector = JobSelector {
                backend: args.from.clone(),
                device_id: args.device_id.clone(),
                created_before: args.created_before.clone(),
            };
            client.create_group_jobs(kind, &selector, &args.to).await?
        }
    };
    if let Some(intended) = &args.tenant {
        let foreign = created
            .jobs()
            .into_iter()
            .find_map(|job| job["tenant_id"].as_str().filter(|t| t != intended));
        if let Some(actual) = foreign {
            let actual = actual.to_owned();
            // Undo what was not meant: cancel every job just created.
            let mut cancelled = 0;
            for job in created.jobs() {
                if let Some(id) = job["id"].as_str() {
                    match client.cancel_job(id).await {
                        Ok(_) => cancelled += 1,
                        Err(e) => eprintln!("{e:#}"),
                    }
                }
            }
            bail!(wrong_tenant(
                intended,
                &actual,
                &format!(
                    "the {} jobs created were cancelled ({cancelled} accepted the cancellation)",
                    created.jobs().len()
                )
            ));
        }
    }
    match &created {
        CreatedJobs::One(job) => {
            println!("job {}", job["id"].as_str().unwrap_or_default());
            println!("{}", jobs::job_line(job));
        }
        CreatedJobs::Group {
            group_id,
            jobs: group,
        } => {
            println!("group {group_id}");
            println!("{} {kind} jobs", group.len());
            if let (Some(intended), true, false) = (&args.tenant, group.is_empty(), confirmed) {
                // Nothing showed the token's tenant: an empty answer may come from
                // a token of another tenant, which has no files.
                eprintln!(
                    "note: the token's tenant could not be checked against {intended:?} \
                     (no file and no job shows it)"
                );
            }
        }
    }
    if !args.wait {
        return Ok(());
    }
    let interval = Duration::from_secs_f64(args.poll_interval);
    let finished = client.wait_for_jobs(&created, interval).await?;
    let unsuccessful: Vec<&serde_json::Value> = finished
        .iter()
        .filter(|job| job["state"] != "succeeded")
        .collect();
    println!("{}", jobs::count_by_state(&finished));
    if !unsuccessful.is_empty() {
        for job in &unsuccessful {
            eprintln!("{}", jobs::job_line(job));
        }
        bail!(
            "{} of {} jobs did not succeed",
            unsuccessful.len(),
            finished.len()
        );
    }
    Ok(())
}

/// The message refusing a token of another tenant than the one named.
fn wrong_tenant(intended: &str, actual: &str, outcome: &str) -> String {
    format!(
        "the token is for tenant {actual:?}, not {intended:?} (--tenant): {outcome}; \
         use a service token of {intended:?}"
    )
}
