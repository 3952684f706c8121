//! The `treasuryd` command: a thin shell over the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use treasuryd::api::auth::{new_token, token_digest};
use treasuryd::app::{self, App};
use treasuryd::config::{self, Config};
use treasuryd::domain::Role;

#[derive(Parser)]
#[command(
    name = "treasuryd",
    version,
    about = "Stablecoin payouts, escrow and netting over a double-entry ledger"
)]
struct Cli {
    /// Config file (TOML). Default: ./treasuryd.toml when it exists, else built-in defaults.
    #[arg(long, global = true, env = "TREASURYD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon until SIGINT/SIGTERM.
    Run,
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the configuration and exit non-zero on the first error.
    CheckConfig,
    /// Print the example configuration with every key documented.
    PrintConfig,
    /// Ledger maintenance.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Bearer tokens for the control API.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Write every deal timeline and every ledger posting, as JSON Lines and CSV, to `--out`
    /// (timelines.jsonl/.csv, journal.jsonl/.csv) for audit.
    Export {
        #[arg(long)]
        out: PathBuf,
    },
    /// Reports.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Deal templates.
    Templates {
        #[command(subcommand)]
        command: TemplatesCommand,
    },
    /// Compare each hot wallet's on-chain token and native balances with the ledger, at the
    /// last block the deposit watcher has read. Exits 1 on a difference nothing in flight
    /// explains, 2 when a network cannot be read.
    Reconcile {
        /// Only this network.
        #[arg(long)]
        network: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// End-of-day settlement of trust pairs.
    Eod {
        #[command(subcommand)]
        command: EodCommand,
    },
    /// Write an online, consistent copy of the SQLite database to `--out` (a new file) while
    /// the daemon runs, and verify the copy. PostgreSQL: see runbooks/backup-and-restore.md.
    Backup {
        #[arg(long)]
        out: PathBuf,
    },
    /// Start the daemon on a fresh SQLite database in a temporary directory and show how to use it.
    Demo,
}

#[derive(Subcommand)]
enum EodCommand {
    /// What closing each pair's open session now would net and settle, as JSON lines; changes
    /// nothing (the launch plan's T-3 dry run).
    DryRun {
        /// Only this pair.
        #[arg(long)]
        pair: Option<String>,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Recompute every balance and hold from the journal, check the hash chain and sum-zero.
    Verify,
}

#[derive(Subcommand)]
enum ReportCommand {
    /// The pilot plan's Go/No-Go report over deals created in [from, to): Markdown, or JSON.
    GoNoGo {
        /// RFC 3339 or YYYY-MM-DD (UTC midnight).
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        json: bool,
        /// Judge one country's deals only.
        #[arg(long)]
        country: Option<String>,
        /// Judge one category's deals only.
        #[arg(long)]
        category: Option<String>,
        /// The survey: partners who answered, and how many would use it again.
        #[arg(long, requires = "survey_would_use_again")]
        survey_respondents: Option<u64>,
        #[arg(long, requires = "survey_respondents")]
        survey_would_use_again: Option<u64>,
    },
}

#[derive(Subcommand)]
enum TemplatesCommand {
    /// Validate every template (in `escrow.templates_dir`, or `--dir`); exits 1 naming the
    /// file and field of the first invalid one.
    Check {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mint a token: prints it once, and the config entry holding its SHA-256.
    New {
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The partner company the token acts for (its id); without it the token is staff's.
        /// A company token's role is admin, trader or approver.
        #[arg(long)]
        company: Option<uuid::Uuid>,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| "one of admin, trader, approver, operator".to_owned())
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let default = Path::new("treasuryd.toml");
    let path = path.or_else(|| default.exists().then_some(default));
    Ok(Config::load(path, std::env::vars())?)
}

/// The configured database for a tool that only reads (no migrations are applied).
async fn open_for_reading(c: &Config) -> anyhow::Result<treasuryd::store::DynStore> {
    let url = c.database_url();
    treasuryd::store::open(
        url.expose_secret(),
        2,
        treasuryd::clock::SystemClock::shared(),
    )
    .await
    .with_context(|| format!("opening {}", config::redact_url(url.expose_secret())))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::PrintConfig => {
            print!("{}", config::EXAMPLE);
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig => {
            let c = load_config(cli.config.as_deref())?;
            let wallets = treasuryd::wallets::load_configured(&c)?;
            println!(
                "configuration OK: {} asset(s), {} network(s), {} wallet(s), {} token(s), database {}",
                c.assets.len(),
                c.networks.len(),
                wallets.len(),
                c.auth.tokens.len(),
                config::redact_url(c.database_url().expose_secret())
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            command:
                TokenCommand::New {
                    name,
                    role,
                    company,
                },
        } => {
            if company.is_some() && role == Role::Operator {
                anyhow::bail!(
                    "--role operator is staff's: a company token is admin, trader or approver"
                );
            }
            treasuryd::api::auth::check_token_name(&name)
                .map_err(|e| anyhow::anyhow!("--name {e}"))?;
            let token = new_token();
            println!(
                "token (shown once; give it to {name}):\n  {}\n",
                token.expose_secret()
            );
            println!(
                "config entry:\n[[auth.tokens]]\nname = {name:?}\nrole = \"{}\"\nsha256 = \"{}\"{}",
                role.as_str(),
                hex::encode(token_digest(token.expose_secret())),
                company.map_or(String::new(), |c| format!("\ncompany = \"{c}\""))
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let c = load_config(cli.config.as_deref())?;
            let store = app::open_store(&c, treasuryd::clock::SystemClock::shared()).await?;
            store.close().await;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Ledger {
            command: LedgerCommand::Verify,
        } => {
            let c = load_config(cli.config.as_deref())?;
            let store = open_for_reading(&c).await?;
            let report = treasuryd::ledger::verify::verify(store.as_ref()).await?;
            store.close().await;
            println!("{report}");
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Run => {
            let c = load_config(cli.config.as_deref())?;
            treasuryd::telemetry::init(&c.log);
            let app = App::build(c, Vec::new()).await?;
            tracing::info!(api = %app.api_addr(), metrics = %app.metrics_addr(), "treasuryd listening");
            app.run_until_stopped(app::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { out } => {
            use treasuryd::export::{Format, journal, timelines};
            let c = load_config(cli.config.as_deref())?;
            let store = open_for_reading(&c).await?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for format in [Format::JsonLines, Format::Csv] {
                let range = treasuryd::export::Range::default();
                for (name, mut chunks) in [
                    ("timelines", timelines(store.clone(), format, range)),
                    ("journal", journal(store.clone(), format, range)),
                ] {
                    use futures::StreamExt;
                    use std::io::Write;
                    let path = out.join(format!("{name}.{}", format.extension()));
                    let mut file = std::io::BufWriter::new(
                        std::fs::File::create(&path)
                            .with_context(|| format!("writing {}", path.display()))?,
                    );
                    while let Some(chunk) = chunks.next().await {
                        file.write_all(chunk?.as_bytes())
                            .with_context(|| format!("writing {}", path.display()))?;
                    }
                    file.flush()
                        .with_context(|| format!("writing {}", path.display()))?;
                    println!("wrote {}", path.display());
                }
            }
            store.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report {
            command:
                ReportCommand::GoNoGo {
                    from,
                    to,
                    json,
                    country,
                    category,
                    survey_respondents,
                    survey_would_use_again,
                },
        } => {
            use treasuryd::escrow::report::parse_instant;
            let (Some(from_at), Some(to_at)) = (parse_instant(&from), parse_instant(&to)) else {
                anyhow::bail!("--from and --to are RFC 3339 or YYYY-MM-DD");
            };
            let c = load_config(cli.config.as_deref())?;
            let store = open_for_reading(&c).await?;
            let survey = treasuryd::escrow::report::Survey::from_counts(
                survey_respondents,
                survey_would_use_again,
            )
            .map_err(|why| anyhow::anyhow!("{why}"))?;
            let judging = treasuryd::escrow::report::Judging {
                country,
                category,
                settle_target_days: c.escrow.settle_target_days.clone(),
                survey,
            };
            let report =
                treasuryd::escrow::report::build(store.as_ref(), from_at, to_at, &judging).await?;
            store.close().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.markdown());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Templates {
            command: TemplatesCommand::Check { dir },
        } => {
            let dir = match dir {
                Some(d) => d,
                None => load_config(cli.config.as_deref())?.escrow.templates_dir,
            };
            match treasuryd::templates::Templates::load(&dir) {
                Ok(all) => {
                    for t in all.iter() {
                        println!(
                            "{:<28} inspection {:>2} d  dispute {:>3} h  holdback {:>2}.{:02}%  outcomes {}  {}",
                            t.id,
                            t.inspection_ttl_days,
                            t.dispute_ttl_hours,
                            t.holdback_bps / 100,
                            t.holdback_bps % 100,
                            t.dispute_outcomes
                                .iter()
                                .map(|o| o.as_str())
                                .collect::<Vec<_>>()
                                .join(","),
                            t.currency.code
                        );
                    }
                    println!("{} template(s) OK in {}", all.len(), dir.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Reconcile { network, json } => {
            let c = load_config(cli.config.as_deref())?;
            reconcile(&c, network.as_deref(), json).await
        }
        Command::Eod {
            command: EodCommand::DryRun { pair },
        } => {
            let c = load_config(cli.config.as_deref())?;
            let store = open_for_reading(&c).await?;
            let only = match pair.as_deref().map(uuid::Uuid::try_parse) {
                Some(Ok(id)) => Some(id),
                Some(Err(_)) => anyhow::bail!("--pair must be a trust pair id"),
                None => None,
            };
            let specs = c.asset_specs();
            for p in store.trust_pairs(only).await? {
                let spec = specs.iter().find(|s| s.key == p.asset).cloned().unwrap_or(
                    treasuryd::domain::AssetSpec {
                        key: p.asset.clone(),
                        decimals: 0,
                    },
                );
                for s in store
                    .trust_sessions(Some(p.id), Some(treasuryd::trust::SessionState::Open), 1)
                    .await?
                {
                    let preview = treasuryd::trust::service::preview(
                        store.as_ref(),
                        store.as_ref(),
                        store.as_ref(),
                        &s,
                    )
                    .await?;
                    let view = treasuryd::api::trust::preview_view(&spec, &p, &preview);
                    let mut line = serde_json::to_value(&view)?;
                    line["pair"] = serde_json::Value::String(p.id.to_string());
                    line["cutoff_at"] = serde_json::Value::String(
                        treasuryd::domain::micros_to_rfc3339(s.cutoff_at),
                    );
                    println!("{line}");
                }
            }
            store.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => demo().await,
        Command::Backup { out } => {
            let c = load_config(cli.config.as_deref())?;
            let url = c.database_url();
            let started = std::time::Instant::now();
            let r = treasuryd::operations::backup::sqlite(url.expose_secret(), &out).await?;
            println!(
                "backup written to {} ({} bytes) in {:.2} s: journal head seq {} hash {}; the copy verifies",
                r.path.display(),
                r.bytes,
                started.elapsed().as_secs_f64(),
                r.journal_seq,
                hex::encode(r.journal_hash)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn reconcile(c: &Config, only: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    use treasuryd::reconcile::{Verdict, configured_assets, reconcile_network, render};
    let networks: Vec<_> = c
        .networks
        .iter()
        .filter(|n| only.is_none_or(|o| o == n.name))
        .collect();
    if let Some(name) = only
        && networks.is_empty()
    {
        anyhow::bail!("no network {name:?} in the configuration");
    }
    let store = open_for_reading(c).await?;
    let (mut lines, mut unreadable) = (Vec::new(), false);
    for network in networks {
        if network.kind == treasuryd::config::ChainKind::Tron {
            eprintln!(
                "{}: Tron wallets are not reconciled by this command yet",
                network.name
            );
            continue;
        }
        let wallets =
            treasuryd::wallets::declared_hot_wallets(&c.wallets_dir, &network.name, network.kind)?;
        let mut result = Err(anyhow::anyhow!("network {}: no RPC URL", network.name));
        // The first endpoint that answers; `treasuryd run` does the health-checked choice.
        for url in &network.rpc_urls {
            let client = treasuryd::chains::evm::EvmClient::new(url.expose_secret())?;
            result = reconcile_network(
                store.as_ref(),
                &client,
                &network.name,
                &wallets,
                &configured_assets(network),
            )
            .await;
            if result.is_ok() {
                break;
            }
        }
        match result {
            Ok(found) => lines.extend(found),
            Err(e) => {
                eprintln!("error: {e:#}");
                unreadable = true;
            }
        }
    }
    store.close().await;
    if json {
        for line in &lines {
            println!("{}", serde_json::to_string(line)?);
        }
    } else {
        print!("{}", render(&lines));
    }
    Ok(if lines.iter().any(|l| l.verdict == Verdict::Mismatch) {
        ExitCode::from(1)
    } else if unreadable || lines.iter().any(|l| l.verdict == Verdict::NotOpened) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

async fn demo() -> anyhow::Result<ExitCode> {
    treasuryd::dev::demo::Demo::start()
        .await?
        .run(app::shutdown_signal())
        .await?;
    Ok(ExitCode::SUCCESS)
}
