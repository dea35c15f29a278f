//! The binary edge: parse the command line, start logging, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cfimg::cli::{Cli, Command, LogFormat};
use cfimg::commands;
use cfimg::error::Error;

/// Commands that end once their output is printed. A reader that stops early (`| head`)
/// ends them the way it ends any Unix filter: the default SIGPIPE action (status 141), not
/// a panic in `println!` or an I/O error reported as "try again later". The long-running
/// commands keep SIGPIPE ignored: their work must not stop because a reader went away.
fn ends_after_printing(command: &Command) -> bool {
    !matches!(
        command,
        Command::Migrate(_) | Command::Watch(_) | Command::Serve(_) | Command::Emulator(_)
    )
}

/// How many threads run cfimg's async tasks: one, unless `TOKIO_WORKER_THREADS` says
/// otherwise or the command is the emulator (a server under test load, one per core).
/// cfimg's own CPU work (hashing, image checks, SQLite, walking folders) runs on the
/// blocking pool and the ledger writer's thread; the async tasks only wait on the network
/// and each other. A second async thread mostly woke up and went back to sleep at every
/// request: one thread cut the client's CPU per paced batch upload by about an eighth and
/// left the unthrottled throughput run unchanged (README, "Performance").
fn async_threads(command: &Command) -> Option<usize> {
    let told = std::env::var_os("TOKIO_WORKER_THREADS").is_some();
    (!told && !matches!(command, Command::Emulator(_))).then_some(1)
}

/// SIGPIPE's handler for those commands: the default action only when stdout or stderr is
/// the closed pipe. A socket the server closed mid-write raises SIGPIPE too (a vectored
/// write cannot ask for MSG_NOSIGNAL): that one must stay an error the command reports
/// (a TLS or connection failure), not a silent death with status 141.
#[cfg(unix)]
extern "C" fn on_sigpipe(_: nix::libc::c_int) {
    use nix::libc;
    let mut fds = [1, 2].map(|fd| libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    });
    // SAFETY: poll, signal and raise are async-signal-safe; fds outlives the call.
    unsafe {
        let ready = libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0);
        if ready > 0
            && fds
                .iter()
                .any(|f| f.revents & (libc::POLLERR | libc::POLLHUP) != 0)
        {
            // Delivered, with the default action, as soon as this handler returns.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::raise(libc::SIGPIPE);
        }
    }
}

#[cfg(unix)]
fn default_sigpipe() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_sigpipe),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: called before any other thread exists; the handler only calls
    // async-signal-safe functions.
    let _ = unsafe { sigaction(Signal::SIGPIPE, &action) };
}

#[cfg(not(unix))]
fn default_sigpipe() {}

/// A write to a closed stdout: the reader has what it wanted, which is a normal end.
fn closed_output(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if ends_after_printing(&cli.command) {
        default_sigpipe();
    }
    let default_level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "cfimg=info,warn",
        (false, 1) => "cfimg=debug,info",
        (false, _) => "trace",
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| cfimg::progress::LogWriter);
    match cli.log_format {
        LogFormat::Json => logs.json().with_current_span(false).init(),
        // Colours only for a person at a terminal; journald and files get plain text.
        // Field values escaped: a file name must not be able to write a line of its own.
        LogFormat::Text => logs
            .fmt_fields(cfimg::shown::ShownFields)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = async_threads(&cli.command) {
        runtime.worker_threads(threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cfimg: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) if closed_output(&e) => commands::EXIT_OK,
        Err(e) => {
            // One line, whatever key or path the error names; only the list of
            // configuration problems is several lines on purpose.
            match &e {
                cfimg::error::Error::Config(_) => eprintln!("cfimg: {e}"),
                _ => eprintln!("cfimg: {}", cfimg::shown::Shown(&e.to_string())),
            }
            if let Some(h) = e.hint() {
                eprintln!("cfimg: {h}");
            }
            e.exit_code()
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
