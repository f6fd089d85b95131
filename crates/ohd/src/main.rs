//! `ohd`: the command line.

use clap::{Parser, Subcommand};
use ohd_server::config::{Config, LogFormat, Overrides};
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "ohd",
    version,
    about = "An agent server that speaks the OpenHands WebSocket API"
)]
struct Cli {
    /// On a failure, show its whole chain of causes and a backtrace
    #[arg(long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

/// What `ohd serve --help` adds after the flags: what ohd reads besides them.
const SERVE_AFTER_HELP: &str = "\
Environment variables (besides those named above):
  LLM_MODEL        the model, provider/model: openai/gpt-4o, anthropic/claude-sonnet-4-5, ...
  LLM_API_KEY      its API key
  LLM_BASE_URL     an OpenAI-compatible server's address (vLLM, Ollama, llama.cpp, ...)
  SESSION_API_KEY  a key every API call and socket must carry
  GITHUB_TOKEN, GITLAB_TOKEN, BITBUCKET_TOKEN, AZURE_DEVOPS_TOKEN, FORGEJO_TOKEN
                   provider tokens for the agent's shell, when the settings page saved none
  OHD_DATABASE_URL a postgres:// URL: store everything in PostgreSQL, shared by several nodes
                   ([store] url; without it, SQLite in the data folder)
  RUST_LOG         log filter, for example ohd_server=debug

The config file (--config) has the sections [server], [store], [cluster], [llm], [agent],
[sandbox] and [mcp]; config.example.toml in the repository names every key with its default. The web UI's
settings page (POST /api/settings) wins over [llm] and [agent] for conversations started later.";

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    #[command(after_help = SERVE_AFTER_HELP)]
    Serve(ServeArgs),
    /// Run the server with a built-in scripted model: see the agent work with no API key and
    /// no network (every message plays the same short task)
    #[command(after_help = DEMO_AFTER_HELP)]
    Demo(DemoArgs),
}

const DEMO_AFTER_HELP: &str = "\
Open the address it prints and send any message. The model is built into ohd (ohd/demo): it
plays the same short task whatever you ask, with no key and no network. The demo keeps its
conversations in a new temporary folder (removed when it stops) unless --data-dir names one; a
model chosen in Settings there replaces the demo's for conversations started afterwards.

Environment variables: SESSION_API_KEY (a key every API call and socket must carry),
OHD_LOG_FORMAT (as --log-format), RUST_LOG (the log filter). The demo reads no config file and
no LLM_*, OHD_HOST, OHD_PORT or OHD_DATA_DIR variables, so that it never touches a real
server's data or model.";

#[derive(clap::Args)]
struct DemoArgs {
    /// Address to listen on [default: 127.0.0.1]
    #[arg(long)]
    host: Option<IpAddr>,
    /// Port to listen on; 0 picks a free one [default: 3000, or a free one if it is taken]
    #[arg(long)]
    port: Option<u16>,
    /// Where the store and the workspaces live [default: a new temporary folder]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Listen beyond this machine without SESSION_API_KEY: anyone who reaches the port can use
    /// the agent
    #[arg(long)]
    unprotected: bool,
    /// Log lines as text for people, or one JSON object per line [default: text]
    #[arg(long, env = "OHD_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormatArg>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1]
    #[arg(long, env = "OHD_HOST")]
    host: Option<IpAddr>,
    /// Port to listen on; 0 picks a free one [default: 3000]
    #[arg(long, env = "OHD_PORT")]
    port: Option<u16>,
    /// Where the store and the workspaces live [default: the user's data folder]/ohd
    #[arg(long, env = "OHD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A config.toml: [server], [store], [cluster], [llm], [agent], [sandbox], [mcp] (see below)
    #[arg(long, env = "OHD_CONFIG")]
    config: Option<PathBuf>,
    /// Serve a built OpenHands web frontend from this folder
    #[arg(long, env = "OHD_WEB_UI")]
    web_ui: Option<PathBuf>,
    /// Extra origins browsers may call from, comma-separated (`*` for any)
    #[arg(long, env = "OHD_CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Option<Vec<String>>,
    /// Host names (besides localhost and loopback addresses) requests may be addressed to,
    /// comma-separated
    #[arg(long, env = "OHD_ALLOWED_HOSTS", value_delimiter = ',')]
    allowed_hosts: Option<Vec<String>>,
    /// Listen beyond this machine without SESSION_API_KEY: anyone who reaches the port can use
    /// the agent
    #[arg(long, env = "OHD_UNPROTECTED")]
    unprotected: bool,
    /// Model calls the agent may make per user message [default: 100]
    #[arg(long, env = "OHD_MAX_ITERATIONS")]
    max_iterations: Option<u32>,
    /// Run without the agent: store and relay events only
    #[arg(long, env = "OHD_NO_AGENT")]
    no_agent: bool,
    /// Log lines as text for people, or one JSON object per line for log shippers
    /// [default: text]
    #[arg(long, env = "OHD_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormatArg>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let verbose = cli.verbose;
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the fix; the causes and a backtrace only when asked for.
            if verbose {
                eprintln!("ohd: {e:?}");
            } else {
                eprintln!("ohd: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            // The configuration first: it says how to log.
            let config = resolve(args)?;
            start_logging(config.log_format);
            private_mounts();
            serve(config)
        }
        Command::Demo(args) => demo(args),
    }
}

fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let log_format = args.log_format.map(LogFormatArg::into).unwrap_or_default();
    start_logging(log_format);
    // Before the runtime's threads start.
    private_mounts();
    // Kept for the server's life; removed when the demo stops.
    let temporary = match args.data_dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("ohd-demo-").tempdir()?),
    };
    let data_dir = args
        .data_dir
        .or_else(|| temporary.as_ref().map(|t| t.path().to_owned()));
    let host = args.host.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    // The usual port if it is free; any free one otherwise (a demo should just start).
    let port = args.port.or_else(|| {
        let free = std::net::TcpListener::bind((host, ohd_server::config::DEFAULT_PORT)).is_ok();
        (!free).then_some(0)
    });
    let config = Config::resolve(Overrides {
        host: Some(host),
        port,
        data_dir,
        session_api_key: std::env::var("SESSION_API_KEY").ok(),
        unprotected: args.unprotected,
        llm_model: Some(ohd_llm::DEMO_MODEL.to_owned()),
        log_format: Some(log_format),
        ..Overrides::default()
    })?;
    let result = tokio::runtime::Runtime::new()?.block_on(run_server(config, true));
    drop(temporary);
    result
}

/// As root, ohd mounts what sandboxes need (passages, system layers); in a mount namespace of
/// its own they go with it, however it ends. Called before the server's threads start.
fn private_mounts() {
    if rustix::process::geteuid().is_root()
        && let Err(e) = ohd_runtime::sandbox::passage::private_mounts()
    {
        tracing::warn!(error = %e, "no mount namespace of its own: the sandboxes' mounts are made on the host's and a killed ohd leaves them there until it starts again");
    }
}

fn start_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn,tower_http=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // The same fields as the text, one JSON object per line.
        LogFormat::Json => builder.json().with_current_span(true).init(),
        // Colours only on a terminal: a log redirected to a file or a journal stays plain.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn resolve(args: ServeArgs) -> anyhow::Result<Config> {
    let env = |name: &str| std::env::var(name).ok();
    Ok(Config::resolve(Overrides {
        host: args.host,
        port: args.port,
        data_dir: args.data_dir,
        config_file: args.config,
        web_ui: args.web_ui,
        cors_allowed_origins: args.cors_origins,
        allowed_hosts: args.allowed_hosts,
        unprotected: args.unprotected,
        session_api_key: env("SESSION_API_KEY"),
        llm_model: env("LLM_MODEL"),
        llm_api_key: env("LLM_API_KEY"),
        llm_base_url: env("LLM_BASE_URL"),
        max_iterations: args.max_iterations,
        no_agent: args.no_agent,
        log_format: args.log_format.map(LogFormatArg::into),
        database_url: env("OHD_DATABASE_URL"),
    })?)
}

impl From<LogFormatArg> for LogFormat {
    fn from(format: LogFormatArg) -> LogFormat {
        match format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(run_server(config, false))
}

async fn run_server(config: Config, demo: bool) -> anyhow::Result<()> {
    tracing::info!(
        data_dir = %config.data_dir.display(),
        auth = config.session_api_key.is_some(),
        demo,
        "starting ohd"
    );
    let server = ohd_server::Server::bind(config).await?;
    let addr = server.local_addr()?;
    // A fixed line on stdout, for scripts and tests that start ohd on port 0.
    println!("ohd listening on http://{addr}");
    if demo {
        println!("demo: open http://{addr}/ and send any message; Ctrl-C stops it");
    }
    server.serve(shutdown_signal()).await
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "no SIGTERM handler; only Ctrl-C stops ohd");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
