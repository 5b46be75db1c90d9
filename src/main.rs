//! The `bakewatch` binary: install the TLS crypto provider, parse the command line, set up
//! logging, run the command, and map its result to an exit code (the only place that does).

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use bakewatch::app::{self, AppError};
use bakewatch::cli::{self, Cli, Command, LogFormat};
use bakewatch::client::{self, ClientError, Conclusion};

/// Exit codes (DESIGN §2).
mod exit {
    pub const OK: u8 = 0;
    /// validate: invalid config; once: a check did not pass; run: config did not load;
    /// deploy / verdict: the verdict is fail.
    pub const FAILED: u8 = 1;
    /// deploy / verdict: the verdict is inconclusive.
    pub const INCONCLUSIVE: u8 = 2;
    /// deploy / verdict: still pending at --timeout (or when read without --wait).
    pub const PENDING: u8 = 3;
    /// deploy / verdict: the deployment was cancelled or superseded.
    pub const STOPPED: u8 = 4;
    /// Bad command line, or (deploy / verdict) a daemon refused the request as wrong: a bad
    /// token (401 / 403: the caller's configuration is wrong, not the daemon's health), an id
    /// reused with a different body (409), an unknown id (404).
    pub const USAGE: u8 = 64;
    /// deploy / verdict: a daemon could not be reached (fail closed).
    pub const UNAVAILABLE: u8 = 69;
    pub const INTERNAL: u8 = 70;
}

/// Why a command did not succeed: the daemon side's errors or the client side's.
enum Failure {
    App(AppError),
    Client(ClientError),
}

impl From<AppError> for Failure {
    fn from(e: AppError) -> Failure {
        Failure::App(e)
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure::Client(e)
    }
}

/// The exit code of what `deploy` / `verdict` concluded.
fn conclusion_code(c: Conclusion) -> u8 {
    match c {
        Conclusion::Registered | Conclusion::Pass => exit::OK,
        Conclusion::Fail => exit::FAILED,
        Conclusion::Inconclusive => exit::INCONCLUSIVE,
        Conclusion::StillPending => exit::PENDING,
        Conclusion::Stopped => exit::STOPPED,
    }
}

/// `default_level`: the daemon logs state changes at info; one-shot commands only errors,
/// so their own output stays readable. `RUST_LOG` overrides both.
fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!(
                "{default_level},rustls_platform_verifier=off"
            ))
        })
        // The cookie library logs cookie values at debug: they can be session secrets, so it
        // never logs below info, whatever RUST_LOG says.
        .add_directive("cookie_store=info".parse().expect("valid directive"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    // One process-wide rustls provider, before anything builds a TLS config.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    // Commands that only print what the binary knows: no logging, no runtime.
    match &cli.command {
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "bakewatch", &mut script);
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            return ExitCode::from(exit::OK);
        }
        Command::Man => {
            return match cli::man_page(Cli::command()) {
                Ok(page) => {
                    let _ = std::io::Write::write_all(&mut std::io::stdout(), &page);
                    ExitCode::from(exit::OK)
                }
                Err(e) => {
                    eprintln!("bakewatch: cannot write the man page: {e}");
                    ExitCode::from(exit::INTERNAL)
                }
            };
        }
        Command::Schema { which } => {
            let text = cli::schema(*which);
            let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
            return ExitCode::from(exit::OK);
        }
        _ => {}
    }
    let level = if matches!(cli.command, Command::Run { .. }) {
        "info"
    } else {
        "error"
    };
    init_logging(cli.log_format, level);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bakewatch: cannot start the async runtime: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };

    let result: Result<u8, Failure> = runtime.block_on(async {
        match cli.command {
            Command::Run { config } => app::run_daemon(&config.config)
                .await
                .map(|()| exit::OK)
                .map_err(Failure::from),
            Command::Validate { config } => app::validate(&config.config)
                .map(|summary| {
                    println!("{summary}");
                    exit::OK
                })
                .map_err(Failure::from),
            Command::Once {
                config,
                checks,
                format,
            } => app::once(&config.config, &checks, format)
                .await
                .map(|(text, all_pass)| {
                    print!("{text}");
                    if all_pass { exit::OK } else { exit::FAILED }
                })
                .map_err(Failure::from),
            Command::Deploy(args) => client::deploy(&args)
                .await
                .map(conclusion_code)
                .map_err(Failure::from),
            Command::Verdict(args) => client::verdict(&args)
                .await
                .map(conclusion_code)
                .map_err(Failure::from),
            Command::Completions { .. } | Command::Man | Command::Schema { .. } => {
                unreachable!("handled before the runtime starts")
            }
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure::App(AppError::Config(e))) => {
            eprintln!("{e}");
            let n = e.diagnostics.len();
            eprintln!(
                "bakewatch: {n} problem{} in the configuration",
                if n == 1 { "" } else { "s" }
            );
            ExitCode::from(exit::FAILED)
        }
        Err(Failure::App(AppError::Usage(m)) | Failure::Client(ClientError::Usage(m))) => {
            eprintln!("bakewatch: {m}");
            ExitCode::from(exit::USAGE)
        }
        Err(Failure::Client(ClientError::Unavailable(m))) => {
            eprintln!("bakewatch: {m}");
            ExitCode::from(exit::UNAVAILABLE)
        }
        Err(Failure::App(AppError::Internal(e))) => {
            eprintln!("bakewatch: {e:#}");
            ExitCode::from(exit::INTERNAL)
        }
        Err(Failure::Client(ClientError::Internal(m))) => {
            eprintln!("bakewatch: {m}");
            ExitCode::from(exit::INTERNAL)
        }
    }
}
