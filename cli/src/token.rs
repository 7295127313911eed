//! `remora token`: add, revoke and list the people of a tokens file. A running server or pool
//! reads the file again by itself within a second (or at once on SIGHUP).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use remora_protocol::tokens::{format_size, Limits, TokenEntry, TokensFile};
use remora_protocol::ConnectionFile;

use crate::serve::{default_state_dir, parse_size};

#[derive(Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
    /// The tokens file (default: STATE_DIR/tokens, as `remora serve --tokens` is given).
    #[arg(long, global = true)]
    tokens: Option<PathBuf>,
    /// The server's state folder (default: as `remora serve`'s).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Give someone a new random token, with limits, and write their connection file.
    Add {
        name: String,
        /// Device memory all of their sessions may hold at once (e.g. 8G).
        #[arg(long, value_parser = parse_size)]
        memory: Option<u64>,
        /// GPUs one session may have.
        #[arg(long)]
        gpus: Option<u32>,
        /// Sessions open at once.
        #[arg(long)]
        sessions: Option<u32>,
        /// Bytes of module images their sessions may hold loaded (e.g. 256M).
        #[arg(long, value_parser = parse_size)]
        module_cache: Option<u64>,
        /// Where to write their connection file (default: NAME.connection here).
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// The server's own connection file, whose address and certificate the new one
        /// names (default: STATE_DIR/connection, which `remora serve` writes).
        #[arg(long)]
        server_connection: Option<PathBuf>,
    },
    /// Take someone's token away: new connections with it are refused, and their running
    /// sessions end with an error that says so.
    Revoke { name: String },
    /// List the people of the tokens file and their limits (not their tokens).
    List,
}

pub fn token(args: TokenArgs) -> anyhow::Result<i32> {
    let state = args.state_dir.unwrap_or_else(default_state_dir);
    let path = args.tokens.unwrap_or_else(|| state.join("tokens"));
    let shown = path.display().to_string();
    let mut file = TokensFile::read(&path)?;
    match args.command {
        TokenCommand::Add {
            name,
            memory,
            gpus,
            sessions,
            module_cache,
            output,
            server_connection,
        } => {
            for (flag, v) in [("--gpus", gpus), ("--sessions", sessions)] {
                if v == Some(0) {
                    anyhow::bail!("{flag} must be at least 1");
                }
            }
            let server = server_connection.unwrap_or_else(|| state.join("connection"));
            let server = ConnectionFile::read(&server).with_context(|| {
                "the new connection file names the server's address and certificate: pass \
                 --server-connection FILE (the file `remora serve` wrote) or --state-dir"
            })?;
            let entry = TokenEntry {
                name: name.clone(),
                token: remora_server::new_token(),
                limits: Limits {
                    memory,
                    gpus,
                    sessions,
                    module_cache,
                },
            };
            let conn = ConnectionFile {
                token: entry.token.clone(),
                ..server
            };
            file.add(entry, &shown)?;
            let output = output.unwrap_or_else(|| PathBuf::from(format!("{name}.connection")));
            // The connection file first: a token nobody was given is harmless, a person added
            // without their file is not what the operator asked for.
            conn.write(&output)
                .with_context(|| format!("writing {}", output.display()))?;
            write(&file, &path)?;
            println!(
                "remora: added `{name}` to {shown}; their connection file is {}",
                output.display()
            );
        }
        TokenCommand::Revoke { name } => {
            file.revoke(&name, &shown)?;
            write(&file, &path)?;
            println!("remora: revoked `{name}`'s token in {shown}");
        }
        TokenCommand::List => {
            if file.entries.is_empty() {
                println!("no tokens in {shown}");
            }
            for e in &file.entries {
                let l = &e.limits;
                let size = |v: Option<u64>| v.map_or_else(|| "-".into(), format_size);
                let count = |v: Option<u32>| v.map_or_else(|| "-".into(), |n| n.to_string());
                println!(
                    "{}  memory {}  gpus {}  sessions {}  module_cache {}",
                    e.name,
                    size(l.memory),
                    count(l.gpus),
                    count(l.sessions),
                    size(l.module_cache),
                );
            }
        }
    }
    Ok(0)
}

fn write(file: &TokensFile, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    file.write(path)
        .with_context(|| format!("writing {}", path.display()))
}
