//! The tokens file: who may use a server or pool, and how much of it, one section per person.
//!
//! ```text
//! # Remora tokens
//! [alice]
//! token = 9a...
//! memory = 8G          # device memory, all her sessions together
//! gpus = 1             # GPUs per session
//! sessions = 4         # sessions open at once
//! module_cache = 256M  # bytes of module images her sessions hold loaded
//! ```
//!
//! Limits are optional (absent: none). The format is the connection file's `key = value`, in
//! sections; a file a person edits by hand gets a line number with every error. `remora token`
//! writes it; servers and pools read it again whenever it changes.

use std::path::Path;

use crate::size::parse_size;

/// What one person may use; `None`: no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Device memory held at once, across all of the person's sessions.
    pub memory: Option<u64>,
    /// GPUs one session may have.
    pub gpus: Option<u32>,
    /// Sessions open at once.
    pub sessions: Option<u32>,
    /// Bytes of module images the person's sessions hold loaded at once.
    pub module_cache: Option<u64>,
}

/// One person's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub name: String,
    pub token: String,
    pub limits: Limits,
}

/// The whole file, entries in the order they appear.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokensFile {
    pub entries: Vec<TokenEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokensFileError {
    #[error("cannot read tokens file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("tokens file {path}, line {line}: {what}")]
    Invalid {
        path: String,
        line: usize,
        what: String,
    },
    #[error("tokens file {path}: {what}")]
    Entry { path: String, what: String },
}

/// Shortest token accepted in a tokens file: a guessable token is no token.
pub const MIN_TOKEN: usize = 16;

impl TokensFile {
    /// Reads the file; a file that does not exist yet is empty.
    pub fn read(path: &Path) -> Result<Self, TokensFileError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(TokensFileError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, TokensFileError> {
        let invalid = |line: usize, what: String| TokensFileError::Invalid {
            path: path.into(),
            line,
            what,
        };
        let mut entries: Vec<(usize, TokenEntry)> = Vec::new();
        let mut token_seen: Vec<bool> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.split('#').next().unwrap_or("").trim();
            if l.is_empty() {
                continue;
            }
            if let Some(rest) = l.strip_prefix('[') {
                let name = rest
                    .strip_suffix(']')
                    .ok_or_else(|| invalid(line, format!("`{l}`: a section is `[name]`")))?
                    .trim();
                check_name(name).map_err(|w| invalid(line, w))?;
                if let Some((at, _)) = entries.iter().find(|(_, e)| e.name == name) {
                    return Err(invalid(
                        line,
                        format!("`{name}` appears twice (first on line {at})"),
                    ));
                }
                entries.push((
                    line,
                    TokenEntry {
                        name: name.to_string(),
                        token: String::new(),
                        limits: Limits::default(),
                    },
                ));
                token_seen.push(false);
                continue;
            }
            let (key, value) = l
                .split_once('=')
                .ok_or_else(|| invalid(line, format!("`{l}` is not `key = value`")))?;
            let (key, value) = (key.trim(), value.trim());
            let Some((_, entry)) = entries.last_mut() else {
                return Err(invalid(
                    line,
                    format!("`{key}` comes before any `[name]` section"),
                ));
            };
            let size = |v: &str| parse_size(v).map_err(|w| invalid(line, format!("{key}: {w}")));
            let count = |v: &str| {
                v.parse::<u32>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| invalid(line, format!("{key}: `{v}` is not a positive count")))
            };
            match key {
                "token" => {
                    if value.len() < MIN_TOKEN || !value.chars().all(|c| c.is_ascii_graphic()) {
                        return Err(invalid(
                            line,
                            format!(
                                "a token is at least {MIN_TOKEN} printable characters without spaces"
                            ),
                        ));
                    }
                    entry.token = value.to_string();
                    if let Some(seen) = token_seen.last_mut() {
                        *seen = true;
                    }
                }
                "memory" => entry.limits.memory = Some(size(value)?),
                "module_cache" => entry.limits.module_cache = Some(size(value)?),
                "gpus" => entry.limits.gpus = Some(count(value)?),
                "sessions" => entry.limits.sessions = Some(count(value)?),
                _ => {
                    return Err(invalid(
                        line,
                        format!(
                        "unknown key `{key}` (known: token, memory, gpus, sessions, module_cache)"
                    ),
                    ))
                }
            }
        }
        for (i, (line, e)) in entries.iter().enumerate() {
            if !token_seen[i] {
                return Err(invalid(*line, format!("`{}` has no token", e.name)));
            }
            if let Some((_, o)) = entries[..i].iter().find(|(_, o)| o.token == e.token) {
                return Err(invalid(
                    *line,
                    format!("`{}` has the same token as `{}`", e.name, o.name),
                ));
            }
        }
        Ok(Self {
            entries: entries.into_iter().map(|(_, e)| e).collect(),
        })
    }

    pub fn get(&self, name: &str) -> Option<&TokenEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Adds an entry; refuses a name or token already present.
    pub fn add(&mut self, entry: TokenEntry, path: &str) -> Result<(), TokensFileError> {
        let refuse = |what: String| {
            Err(TokensFileError::Entry {
                path: path.into(),
                what,
            })
        };
        if let Err(w) = check_name(&entry.name) {
            return refuse(w);
        }
        if self.get(&entry.name).is_some() {
            return refuse(format!("`{}` already has a token", entry.name));
        }
        if self.entries.iter().any(|e| e.token == entry.token) {
            return refuse("that token is already someone's".into());
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Removes `name`'s entry; an error if there is none.
    pub fn revoke(&mut self, name: &str, path: &str) -> Result<TokenEntry, TokensFileError> {
        let at = self
            .entries
            .iter()
            .position(|e| e.name == name)
            .ok_or_else(|| TokensFileError::Entry {
                path: path.into(),
                what: format!("no token named `{name}`"),
            })?;
        Ok(self.entries.remove(at))
    }

    pub fn render(&self) -> String {
        let mut out = String::from(
            "# Remora tokens: one [name] section per person (see `remora token --help`).\n",
        );
        for e in &self.entries {
            out.push_str(&format!("\n[{}]\ntoken = {}\n", e.name, e.token));
            let l = &e.limits;
            if let Some(m) = l.memory {
                out.push_str(&format!("memory = {}\n", format_size(m)));
            }
            if let Some(g) = l.gpus {
                out.push_str(&format!("gpus = {g}\n"));
            }
            if let Some(s) = l.sessions {
                out.push_str(&format!("sessions = {s}\n"));
            }
            if let Some(m) = l.module_cache {
                out.push_str(&format!("module_cache = {}\n", format_size(m)));
            }
        }
        out
    }

    /// Writes the file whole and then renames it into place, so a server reading it never
    /// sees half of it; readable by its owner only (it holds secrets).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.render())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        }
        std::fs::rename(&tmp, path)
    }
}

/// A size in the largest unit that writes it exactly.
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes.trailing_zeros() >= shift {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a name: use 1 to 64 letters, digits, `-`, `_`, `.` or `@`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# people\n[alice]\ntoken = 0123456789abcdef0123\nmemory = 8G\ngpus = 1\n\
                        sessions = 4 # at once\nmodule_cache = 256M\n\n[bob]\ntoken = fedcba98765432100000\n";

    fn err(text: &str) -> String {
        TokensFile::parse(text, "t").unwrap_err().to_string()
    }

    #[test]
    fn a_good_file_parses_and_renders_back_to_itself() {
        let f = TokensFile::parse(GOOD, "t").unwrap();
        assert_eq!(f.entries.len(), 2);
        let a = f.get("alice").unwrap();
        assert_eq!(
            a.limits,
            Limits {
                memory: Some(8 << 30),
                gpus: Some(1),
                sessions: Some(4),
                module_cache: Some(256 << 20),
            }
        );
        assert_eq!(f.get("bob").unwrap().limits, Limits::default());
        assert_eq!(TokensFile::parse(&f.render(), "t").unwrap(), f);
        assert_eq!(TokensFile::parse("", "t").unwrap(), TokensFile::default());
    }

    #[test]
    fn duplicates_are_refused_with_their_lines() {
        let twice = format!("{GOOD}[alice]\ntoken = 11112222333344445555\n");
        assert!(err(&twice).contains("line 11: `alice` appears twice (first on line 2)"));
        let same = "[a]\ntoken = 0123456789abcdef0123\n[b]\ntoken = 0123456789abcdef0123\n";
        assert!(err(same).contains("line 3: `b` has the same token as `a`"));
    }

    #[test]
    fn bad_values_and_unknown_keys_say_what_is_wrong() {
        let t = "[a]\ntoken = 0123456789abcdef0123\n";
        assert!(
            err(&format!("{t}memory = lots\n")).contains("line 3: memory: `lots` is not a size")
        );
        assert!(err(&format!("{t}memory = 0\n")).contains("memory: `0` is out of range"));
        assert!(err(&format!("{t}gpus = -1\n")).contains("gpus: `-1` is not a positive count"));
        assert!(err(&format!("{t}sessions = 0\n")).contains("not a positive count"));
        assert!(err(&format!("{t}memroy = 1G\n")).contains("unknown key `memroy`"));
        assert!(err(&format!("{t}just words\n")).contains("is not `key = value`"));
        assert!(err("token = 0123456789abcdef0123\n").contains("before any `[name]` section"));
        assert!(err("[a]\nmemory = 1G\n").contains("line 1: `a` has no token"));
        assert!(err("[a]\ntoken = short\n").contains("at least 16"));
        assert!(err("[a b]\ntoken = 0123456789abcdef0123\n").contains("is not a name"));
        assert!(err("[a\n").contains("a section is `[name]`"));
    }

    #[test]
    fn add_and_revoke_keep_names_and_tokens_unique() {
        let mut f = TokensFile::parse(GOOD, "t").unwrap();
        let entry = |name: &str, token: &str| TokenEntry {
            name: name.into(),
            token: token.into(),
            limits: Limits::default(),
        };
        assert!(f
            .add(entry("alice", "99998888777766665555"), "t")
            .unwrap_err()
            .to_string()
            .contains("`alice` already has a token"));
        assert!(f
            .add(entry("carol", "fedcba98765432100000"), "t")
            .unwrap_err()
            .to_string()
            .contains("already someone's"));
        f.add(entry("carol", "99998888777766665555"), "t").unwrap();
        assert_eq!(f.revoke("bob", "t").unwrap().name, "bob");
        assert!(f.revoke("bob", "t").is_err());
        assert_eq!(
            f.entries.iter().map(|e| &e.name[..]).collect::<Vec<_>>(),
            ["alice", "carol"]
        );
        assert_eq!(format_size(3 << 30), "3G");
        assert_eq!(format_size((1 << 30) + 1), "1073741825");
    }
}
