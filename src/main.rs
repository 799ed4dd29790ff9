//! The `callgate` binary: the validated config (exit 64 when invalid) → telemetry → the chosen verb.
#![forbid(unsafe_code)]

use std::{path::PathBuf, process::ExitCode};

use callgate::{
    admin_client::AdminClient,
    config::{Config, EXIT_CONFIG},
    domain::phone_number::PhoneNormalizer,
    rules::{RulesLoadError, explain_event, load_dir, reload_on_sighup},
    startup::{Application, shutdown_signal},
    telemetry,
};
use clap::{Parser, Subcommand};

/// mimalloc rather than the system allocator: a lookup allocates a handful of small, short-lived
/// values, often freed on another runtime thread than the one that made them, and glibc's
/// malloc took its arena-locked slow path for them (load-tests/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gateway between Ringostat and retailCRM.
#[derive(Debug, Parser)]
#[command(name = "callgate", version, about)]
struct Cli {
    /// Configuration file (default: ./callgate.toml when it exists).
    #[arg(long, short, global = true, env = "CALLGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (HTTP endpoints and the worker).
    Serve,
    /// Print the E.164 form of a phone number, or why it is not one.
    Normalize {
        /// The number as typed (quote it when it has spaces).
        number: String,
        /// Default region for numbers without a country code (default: phone.default_region).
        #[arg(long)]
        region: Option<String>,
    },
    /// Dead letters of a running callgate (through its admin API).
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
        /// Admin API base URL (default: from server.host and server.port).
        #[arg(long, global = true)]
        url: Option<String>,
    },
    /// Quarantined webhook payloads of a running callgate (through its admin API).
    Quarantine {
        #[command(subcommand)]
        action: QuarantineAction,
        /// Admin API base URL (default: from server.host and server.port).
        #[arg(long, global = true)]
        url: Option<String>,
    },
    /// Create or update the telephony integration module in retailCRM (makeCallUrl,
    /// changeUserStatusUrl, additionalCodes, externalPhones, clientId). Exit 0 when done or
    /// already up to date; 1 when retailCRM refused it or does not know some managers or
    /// stores (each named); 64 on a configuration error.
    Register {
        /// Print the request that would be sent and send nothing.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: print the clientId (crm.client_id) instead of masking it.
        #[arg(long, requires = "dry_run")]
        show_secrets: bool,
    },
    /// Check routing rules, or explain which rule fires for an event (never touches the CRM).
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Validate a rules directory: prints "N rules OK" (exit 0) or every file:line error
    /// (exit 64, as for an invalid configuration).
    Check {
        /// The directory (default: rules.dir).
        dir: Option<PathBuf>,
    },
    /// Show which rule fires for a webhook payload, why the ones above it do not, and the
    /// action plan. EVENT.json holds the webhook fields, optionally "event" (start, answer,
    /// end, missed) and the simulated CRM facts "customer_exists", "customer_owner",
    /// "open_order". Exit 0; 64 on bad rules; 1 on an unreadable event.
    Explain {
        /// The payload file.
        event: PathBuf,
        /// The rules directory (default: rules.dir).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DeadLetterAction {
    /// Print the dead letters (newest first) as JSON.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Put a dead letter (or all of them) back in the queue.
    Replay {
        /// The dead letter's id.
        #[arg(required_unless_present = "all")]
        id: Option<u64>,
        /// Replay every dead letter.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
enum QuarantineAction {
    /// Print the quarantined payloads (newest first) as JSON.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// Default configuration file, used when present.
const DEFAULT_CONFIG_FILE: &str = "callgate.toml";

/// Loads and validates the configuration; an invalid one is exit 64 with its message.
fn load_config(path: Option<PathBuf>) -> Result<Config, ExitCode> {
    let path = path.or_else(|| {
        let default = PathBuf::from(DEFAULT_CONFIG_FILE);
        default.exists().then_some(default)
    });
    Config::load(path.as_deref()).map_err(|e| {
        eprintln!("callgate: {e}");
        ExitCode::from(EXIT_CONFIG as u8)
    })
}

/// A multi-threaded tokio runtime for the verbs that do I/O.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("callgate: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

fn register(config: Option<PathBuf>, dry_run: bool, show_secrets: bool) -> ExitCode {
    use callgate::register::{self, RegisterError, Registered};
    let config = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let fail = |e: RegisterError| {
        eprintln!("callgate register: {e}");
        if let RegisterError::Crm(cause) = &e {
            eprintln!("  cause: {cause}");
        }
        match e {
            RegisterError::Config(_) => ExitCode::from(EXIT_CONFIG as u8),
            _ => ExitCode::FAILURE,
        }
    };
    let module = match register::module(&config) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    if dry_run {
        return match register::dry_run_text(&config, &module, show_secrets) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(register::register(&config, &module)) {
        Ok(outcome) => {
            println!(
                "{}",
                match outcome {
                    Registered::Created => "telephony module \"callgate\" created",
                    Registered::Updated => "telephony module \"callgate\" updated",
                    Registered::Unchanged =>
                        "telephony module \"callgate\" already up to date; nothing sent",
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Normalize { number, region } => normalize(cli.config, &number, region),
        Command::Rules { command } => rules(cli.config, command),
        Command::Register {
            dry_run,
            show_secrets,
        } => register(cli.config, dry_run, show_secrets),
        Command::DeadLetters { action, url } => {
            let path = match action {
                DeadLetterAction::List { limit } => {
                    (false, format!("/admin/dead-letters?limit={limit}"))
                }
                DeadLetterAction::Replay { all: true, .. } => {
                    (true, "/admin/dead-letters/replay".to_owned())
                }
                DeadLetterAction::Replay { id, .. } => (
                    true,
                    format!("/admin/dead-letters/{}/replay", id.unwrap_or_default()),
                ),
            };
            admin(cli.config, url, path)
        }
        Command::Quarantine {
            action: QuarantineAction::List { limit },
            url,
        } => admin(
            cli.config,
            url,
            (false, format!("/admin/quarantine?limit={limit}")),
        ),
        Command::Serve => {
            let config = match load_config(cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            telemetry::init(config.telemetry.format);
            let runtime = match runtime() {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            runtime.block_on(serve(config))
        }
    }
}

async fn serve(config: Config) -> ExitCode {
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("callgate: {e:#}");
            // Bad routing rules are a configuration error, like a bad callgate.toml.
            if e.chain().any(|c| c.is::<RulesLoadError>()) {
                return ExitCode::from(EXIT_CONFIG as u8);
            }
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(port = app.port(), "callgate is listening.");
    tokio::spawn(reload_on_sighup(app.state().rules.clone()));
    let config = &app.state().config;
    if config.ringostat.webhook_token.is_empty() {
        tracing::warn!(
            "ringostat.webhook_token is empty: /ringostat/webhook refuses every event until it is set."
        );
    }
    if config.admin.token.is_empty() {
        tracing::warn!("admin.token is empty: the /admin API is disabled.");
    }
    let token = app.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("Shutting down: no new requests; queued work stays in the store.");
        token.cancel();
    });
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error.cause_chain = ?e, "callgate stopped with an error.");
            ExitCode::FAILURE
        }
    }
}

/// Runs one admin API call and prints its JSON answer.
fn admin(config: Option<PathBuf>, url: Option<String>, (post, path): (bool, String)) -> ExitCode {
    let config = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let client = match AdminClient::new(&config, url) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("callgate: {e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("callgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let answer = runtime.block_on(async {
        if post {
            client.post(&path).await
        } else {
            client.get(&path).await
        }
    });
    match answer {
        Ok(value) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("callgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn normalize(config: Option<PathBuf>, number: &str, region: Option<String>) -> ExitCode {
    let normalizer = match region {
        Some(region) => match PhoneNormalizer::new(&region.to_ascii_uppercase()) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("callgate: {e}");
                return ExitCode::from(EXIT_CONFIG as u8);
            }
        },
        None => match load_config(config) {
            Ok(c) => c.normalizer,
            Err(code) => return code,
        },
    };
    match normalizer.parse(number) {
        Ok(parsed) => {
            // The number is the user's own input, printed for them: not a log line.
            match parsed.extension {
                Some(ext) => println!("{} (extension {ext})", parsed.number.e164()),
                None => println!("{}", parsed.number.e164()),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("callgate: {number:?} is not a phone number: {e}");
            ExitCode::from(1)
        }
    }
}

fn rules(config: Option<PathBuf>, command: RulesCommand) -> ExitCode {
    let config = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let managers: Vec<_> = config.directory.all().iter().map(|m| m.id).collect();
    let load = |dir: Option<PathBuf>| {
        let dir = dir.unwrap_or_else(|| config.rules.dir.clone());
        load_dir(&dir, &config.normalizer, &managers).map_err(|e| {
            eprintln!("callgate: {e}");
            ExitCode::from(EXIT_CONFIG as u8)
        })
    };
    match command {
        RulesCommand::Check { dir } => match load(dir) {
            Ok(rules) => {
                println!("{} rules OK ({} files)", rules.len(), rules.file_count());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        RulesCommand::Explain { event, rules, json } => {
            let rules = match load(rules) {
                Ok(r) => r,
                Err(code) => return code,
            };
            let payload = match std::fs::read_to_string(&event)
                .map_err(|e| e.to_string())
                .and_then(|t| {
                    serde_json::from_str::<serde_json::Value>(&t).map_err(|e| e.to_string())
                }) {
                Ok(serde_json::Value::Object(map)) => map,
                Ok(_) => {
                    eprintln!("callgate: {} is not a JSON object", event.display());
                    return ExitCode::from(1);
                }
                Err(e) => {
                    eprintln!("callgate: cannot read {}: {e}", event.display());
                    return ExitCode::from(1);
                }
            };
            let report = match explain_event(&payload, &config, &rules) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("callgate: {} is not a call event: {e}", event.display());
                    return ExitCode::from(1);
                }
            };
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("callgate: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.render_text());
            }
            ExitCode::SUCCESS
        }
    }
}
