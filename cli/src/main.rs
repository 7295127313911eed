//! `remora`: serve GPUs, run CUDA applications on them, list them.

mod metrics;
mod run;
mod serve;
mod status;
mod token;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "remora",
    version,
    about = "Run unmodified CUDA applications on GPUs in other machines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve this machine's GPUs (or emulated ones) to Remora clients.
    Serve(serve::ServeArgs),
    /// Run a command with the Remora shim as its CUDA driver.
    Run(run::RunArgs),
    /// Give people tokens with limits, take them away, list them (`serve --tokens`).
    Token(token::TokenArgs),
    /// List the devices a server offers, like `nvidia-smi -L`.
    Devices {
        /// Connection file of the server (default: $REMORA_CONNECTION).
        #[arg(long)]
        connection: Option<PathBuf>,
    },
    /// Show what a server or pool is doing: devices or members, sessions, queue.
    Status {
        /// Connection file of the server or pool (default: $REMORA_CONNECTION).
        #[arg(long)]
        connection: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Run(args) => run::run(args),
        Command::Token(args) => token::token(args),
        Command::Devices { connection } => devices(connection),
        Command::Status { connection, json } => {
            connection_path(connection).and_then(|p| status::status(&p, json))
        }
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("remora: {e:#}");
            std::process::exit(1);
        }
    }
}

fn connection_path(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    given
        .or_else(|| std::env::var_os("REMORA_CONNECTION").map(PathBuf::from))
        .ok_or_else(|| {
            anyhow::anyhow!("no server given: pass --connection FILE or set REMORA_CONNECTION")
        })
}

fn devices(connection: Option<PathBuf>) -> anyhow::Result<i32> {
    let file = remora_protocol::ConnectionFile::read(&connection_path(connection)?)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let info = rt.block_on(async {
        let c = remora_transport::client::connect(
            &file,
            &remora_protocol::messages::SessionRequest {
                observer: true,
                ..Default::default()
            },
            std::time::Duration::from_secs(10),
            |_| {},
        )
        .await;
        c.map(|c| {
            c.conn.close(0u32.into(), b"done");
            c.info
        })
    });
    let info = info.map_err(|e| anyhow::anyhow!(e))?;
    println!(
        "server {} at {} (driver version {})",
        info.server_name, file.address, info.driver_version
    );
    for (i, d) in info.devices.iter().enumerate() {
        let uuid = d
            .uuid
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        println!(
            "GPU {i}: {} ({} MiB) (UUID: GPU-{}-{}-{}-{}-{})",
            d.name,
            d.total_mem >> 20,
            &uuid[0..8],
            &uuid[8..12],
            &uuid[12..16],
            &uuid[16..20],
            &uuid[20..32]
        );
    }
    Ok(0)
}
