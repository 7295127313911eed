//! The connection file a server writes and clients read: where to connect, which certificate
//! to trust, which token to present.
//!
//! ```text
//! # Remora connection file
//! address = 127.0.0.1:4433
//! cert_sha256 = 3f...
//! token = 9a...
//! gpus = emulated
//! ```
//!
//! `gpus` (`emulated` or `real`) is optional: with it, `remora run` knows how to prepare CUDA
//! clients without asking the server first (a pool, whose members may differ, leaves it out).

use std::net::SocketAddr;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionFile {
    pub address: SocketAddr,
    pub cert_sha256: [u8; 32],
    pub token: String,
    /// Whether the server's GPUs are emulated, when it is known for all of them.
    pub emulated: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectionFileError {
    #[error("cannot read connection file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("connection file {path}, line {line}: {what}")]
    Invalid {
        path: String,
        line: usize,
        what: String,
    },
    #[error("connection file {path} lacks `{key}`")]
    Missing { path: String, key: &'static str },
}

impl ConnectionFile {
    pub fn read(path: &Path) -> Result<Self, ConnectionFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConnectionFileError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, ConnectionFileError> {
        let (mut address, mut cert, mut token, mut emulated) = (None, None, None, None);
        let invalid = |line: usize, what: String| ConnectionFileError::Invalid {
            path: path.into(),
            line,
            what,
        };
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(invalid(
                    i + 1,
                    format!("expected `key = value`, found `{line}`"),
                ));
            };
            let v = v.trim();
            match k.trim() {
                "address" => {
                    address = Some(
                        v.parse()
                            .map_err(|e| invalid(i + 1, format!("address `{v}`: {e}")))?,
                    )
                }
                "cert_sha256" => {
                    let mut h = [0u8; 32];
                    hex::decode_to_slice(v, &mut h).map_err(|e| {
                        invalid(i + 1, format!("cert_sha256 must be 64 hex digits: {e}"))
                    })?;
                    cert = Some(h);
                }
                "token" => token = Some(v.to_string()),
                "gpus" => {
                    emulated = Some(match v {
                        "emulated" => true,
                        "real" => false,
                        _ => {
                            return Err(invalid(
                                i + 1,
                                format!("gpus must be `emulated` or `real`, not `{v}`"),
                            ))
                        }
                    })
                }
                other => return Err(invalid(i + 1, format!("unknown key `{other}`"))),
            }
        }
        let missing = |key| ConnectionFileError::Missing {
            path: path.into(),
            key,
        };
        Ok(Self {
            address: address.ok_or_else(|| missing("address"))?,
            cert_sha256: cert.ok_or_else(|| missing("cert_sha256"))?,
            token: token.ok_or_else(|| missing("token"))?,
            emulated,
        })
    }

    pub fn render(&self) -> String {
        let gpus = match self.emulated {
            Some(true) => "gpus = emulated\n",
            Some(false) => "gpus = real\n",
            None => "",
        };
        format!(
            "# Remora connection file: give it to clients as REMORA_CONNECTION or --connection.\n\
             address = {}\ncert_sha256 = {}\ntoken = {}\n{gpus}",
            self.address,
            hex::encode(self.cert_sha256),
            self.token
        )
    }

    /// Writes the file readable by its owner only: it holds a secret.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        opts.mode(0o600);
        let tmp = path.with_extension("tmp");
        let mut f = opts.open(&tmp)?;
        f.write_all(self.render().as_bytes())?;
        drop(f);
        std::fs::rename(tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_parses_back() {
        let c = ConnectionFile {
            address: "127.0.0.1:4433".parse().unwrap(),
            cert_sha256: [0xab; 32],
            token: "t0k".into(),
            emulated: None,
        };
        assert_eq!(ConnectionFile::parse(&c.render(), "x").unwrap(), c);
        for emulated in [Some(true), Some(false)] {
            let c = ConnectionFile {
                emulated,
                ..c.clone()
            };
            assert_eq!(ConnectionFile::parse(&c.render(), "x").unwrap(), c);
        }
        let e = ConnectionFile::parse(&c.render().replace("token", "gpus = some\ntoken"), "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("emulated") && e.contains("some"), "{e}");
    }

    #[test]
    fn errors_name_the_line_and_key() {
        let e = ConnectionFile::parse("address = nope\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("nope"), "{e}");
        let e = ConnectionFile::parse("address = 1.2.3.4:5\ntoken = x\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cert_sha256"), "{e}");
    }
}
