//! Who may use a server or pool: its own token (no limits of a person) and, with a tokens
//! file, one token per person with that person's limits. Servers and pools share it; each
//! enforces what it can see (a pool cannot see module images, for instance).
//!
//! The file is read again whenever it changes ([`Access::reload`]); a person who keeps the
//! same name and token keeps their [`Account`] (what they hold stays counted, new limits
//! apply to what they ask next), and anyone else's account is revoked, which ends their
//! sessions. What an account counts is shared by all of its sessions, so limits hold per
//! person, not per connection.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::tokens::{format_size, Limits, TokensFile, TokensFileError};

/// One person of the tokens file, and what their sessions hold now.
#[derive(Debug)]
pub struct Account {
    pub name: String,
    token: String,
    limits: Mutex<Limits>,
    memory: AtomicU64,
    modules: AtomicU64,
    sessions: AtomicU32,
    revoked: AtomicBool,
}

impl Account {
    fn new(name: String, token: String, limits: Limits) -> Self {
        Self {
            name,
            token,
            limits: Mutex::new(limits),
            memory: AtomicU64::new(0),
            modules: AtomicU64::new(0),
            sessions: AtomicU32::new(0),
            revoked: AtomicBool::new(false),
        }
    }

    pub fn limits(&self) -> Limits {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn revoked(&self) -> bool {
        self.revoked.load(Ordering::Relaxed)
    }

    /// Device memory all of this person's sessions hold now.
    pub fn memory(&self) -> u64 {
        self.memory.load(Ordering::Relaxed)
    }

    /// Bytes of module images this person's sessions hold loaded now.
    pub fn modules(&self) -> u64 {
        self.modules.load(Ordering::Relaxed)
    }

    pub fn sessions(&self) -> u32 {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Counts `bytes` more device memory, or says why not (the sentence for the client).
    pub fn reserve_memory(&self, bytes: u64) -> Result<(), String> {
        reserve(&self.memory, bytes, self.limits().memory).map_err(|held| {
            format!(
                "{bytes} bytes would exceed the device memory limit of token `{}` ({} for all its sessions, {held} held)",
                self.name,
                format_size(self.limits().memory.unwrap_or(0)),
            )
        })
    }

    pub fn release_memory(&self, bytes: u64) {
        release(&self.memory, bytes);
    }

    /// Counts a module image of `bytes` more, or says why not.
    pub fn reserve_module(&self, bytes: u64) -> Result<(), String> {
        reserve(&self.modules, bytes, self.limits().module_cache).map_err(|held| {
            format!(
                "a module image of {bytes} bytes would exceed the module cache limit of token `{}` ({}, {held} held)",
                self.name,
                format_size(self.limits().module_cache.unwrap_or(0)),
            )
        })
    }

    pub fn release_module(&self, bytes: u64) {
        release(&self.modules, bytes);
    }

    /// Counts one more open session, or says why not; the slot gives it back when dropped.
    pub fn open_session(self: &Arc<Self>) -> Result<SessionSlot, String> {
        let limit = self.limits().sessions.map_or(u64::MAX, u64::from);
        let counter = &self.sessions;
        let mut now = counter.load(Ordering::Relaxed);
        loop {
            if u64::from(now) >= limit {
                return Err(format!(
                    "token `{}` already has {now} session(s) open, its limit; close one and try again",
                    self.name
                ));
            }
            match counter.compare_exchange(now, now + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Ok(SessionSlot(self.clone())),
                Err(actual) => now = actual,
            }
        }
    }
}

/// One open session of an account.
#[derive(Debug)]
pub struct SessionSlot(Arc<Account>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Adds `n` to `counter` unless that passes `limit`; the amount held when refused.
fn reserve(counter: &AtomicU64, n: u64, limit: Option<u64>) -> Result<(), u64> {
    let limit = limit.unwrap_or(u64::MAX);
    let mut now = counter.load(Ordering::Relaxed);
    loop {
        let next = now.checked_add(n).filter(|&v| v <= limit).ok_or(now)?;
        match counter.compare_exchange(now, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return Ok(()),
            Err(actual) => now = actual,
        }
    }
}

fn release(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

/// The tokens a server or pool accepts.
pub struct Access {
    own: String,
    file: Option<PathBuf>,
    state: Mutex<State>,
}

struct State {
    /// The file's text when it was last read, to notice changes.
    seen: Option<String>,
    people: Vec<Arc<Account>>,
}

/// What a reload changed.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Accounts no longer in the file (or whose token changed): their sessions must end.
    pub revoked: Vec<Arc<Account>>,
    pub people: usize,
}

impl Access {
    /// The server's own token, and the tokens file, read now (an unreadable or invalid file
    /// is an error here, where the operator sees it).
    pub fn new(own: String, file: Option<PathBuf>) -> Result<Self, TokensFileError> {
        let access = Self {
            own,
            file,
            state: Mutex::new(State {
                seen: None,
                people: Vec::new(),
            }),
        };
        access.reload()?;
        Ok(access)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every token accepted now, and whose each is (`None`: the server's own).
    pub fn tokens(&self) -> (Vec<String>, Vec<Option<Arc<Account>>>) {
        let st = self.state();
        let mut tokens = vec![self.own.clone()];
        let mut owners = vec![None];
        for p in &st.people {
            tokens.push(p.token.clone());
            owners.push(Some(p.clone()));
        }
        (tokens, owners)
    }

    pub fn accounts(&self) -> Vec<Arc<Account>> {
        self.state().people.clone()
    }

    /// Reads the tokens file again if its text changed. An invalid file changes nothing (the
    /// tokens in force stay) and is returned as the error.
    pub fn reload(&self) -> Result<Reloaded, TokensFileError> {
        let Some(path) = &self.file else {
            return Ok(Reloaded::default());
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(TokensFileError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        let mut st = self.state();
        if st.seen.as_deref() == Some(&text) {
            return Ok(Reloaded {
                revoked: Vec::new(),
                people: st.people.len(),
            });
        }
        let parsed = TokensFile::parse(&text, &path.display().to_string());
        // Whatever the outcome, this text has been looked at: an invalid file is reported
        // once, not every time it is polled.
        st.seen = Some(text);
        let file = parsed?;
        let mut old = std::mem::take(&mut st.people);
        for e in file.entries {
            let kept = old
                .iter()
                .position(|a| a.name == e.name && a.token == e.token)
                .map(|i| old.swap_remove(i));
            let account = match kept {
                Some(a) => {
                    *a.limits.lock().unwrap_or_else(|e| e.into_inner()) = e.limits;
                    a
                }
                None => Arc::new(Account::new(e.name, e.token, e.limits)),
            };
            st.people.push(account);
        }
        for a in &old {
            a.revoked.store(true, Ordering::Relaxed);
        }
        Ok(Reloaded {
            revoked: old,
            people: st.people.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "[alice]\ntoken = aaaaaaaaaaaaaaaaaaaa\nmemory = 1K\nsessions = 1\n";
    const BOB: &str = "[bob]\ntoken = bbbbbbbbbbbbbbbbbbbb\n";

    fn access(text: &str) -> (Access, PathBuf) {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "remora-access-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        (Access::new("own".into(), Some(path.clone())).unwrap(), path)
    }

    #[test]
    fn limits_are_counted_per_account() {
        let (a, path) = access(ALICE);
        let alice = a.accounts()[0].clone();
        alice.reserve_memory(1000).unwrap();
        let e = alice.reserve_memory(100).unwrap_err();
        assert!(
            e.contains("limit of token `alice` (1K for all its sessions, 1000 held)"),
            "{e}"
        );
        alice.release_memory(1000);
        alice.reserve_memory(1024).unwrap();
        let slot = alice.open_session().unwrap();
        assert!(alice
            .open_session()
            .unwrap_err()
            .contains("already has 1 session(s) open"));
        drop(slot);
        let _again = alice.open_session().unwrap();
        alice.reserve_module(u64::MAX).unwrap();
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_reload_keeps_who_stays_and_revokes_who_left() {
        let (a, path) = access(&format!("{ALICE}{BOB}"));
        let (tokens, owners) = a.tokens();
        assert_eq!(tokens.len(), 3);
        assert!(owners[0].is_none(), "the server's own token comes first");
        let alice = a.accounts()[0].clone();
        alice.reserve_memory(10).unwrap();
        std::fs::write(&path, ALICE.replace("1K", "2K")).unwrap();
        let r = a.reload().unwrap();
        assert_eq!(r.people, 1);
        assert_eq!(r.revoked.len(), 1);
        assert_eq!(r.revoked[0].name, "bob");
        assert!(r.revoked[0].revoked());
        let still = a.accounts()[0].clone();
        assert!(Arc::ptr_eq(&still, &alice), "alice keeps her account");
        assert_eq!(still.memory(), 10);
        assert_eq!(still.limits().memory, Some(2048));
        // An invalid file keeps the tokens in force.
        std::fs::write(&path, "[alice]\nmemory = lots\n").unwrap();
        assert!(a.reload().is_err());
        assert_eq!(a.tokens().0.len(), 2);
        assert!(a.reload().is_ok(), "reported once per change");
        let _ = std::fs::remove_file(path);
    }
}
