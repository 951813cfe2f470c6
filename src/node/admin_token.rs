//! The bearer token the admin API's `/v1/*` calls must carry.
//!
//! The token lives in a file (in Kubernetes, a Secret volume the operator
//! mounts). The file is checked on every call with one `stat`: when its
//! modification time or size changed it is read again, so rotating the
//! Secret rotates the token without a restart. An unreadable or empty file
//! refuses every call (fail closed).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Content identity of the token file as last read.
#[derive(Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

pub struct AdminToken {
    path: Option<PathBuf>,
    cached: RefCell<Option<(Stamp, Option<Vec<u8>>)>>,
}

impl AdminToken {
    /// `None`: no token configured, the `/v1/*` calls are open (a node run
    /// by hand; the operator always configures one).
    pub fn new(path: Option<PathBuf>) -> Self {
        Self {
            path,
            cached: RefCell::new(None),
        }
    }

    pub fn configured(&self) -> bool {
        self.path.is_some()
    }

    /// Whether an `Authorization` header value admits a `/v1/*` call.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(path) = &self.path else {
            return true;
        };
        let Some(expected) = self.current(path) else {
            return false;
        };
        let Some(given) = authorization.and_then(bearer) else {
            return false;
        };
        constant_time_eq(&expected, given)
    }

    /// The token now in the file, re-read when the file changed.
    fn current(&self, path: &Path) -> Option<Vec<u8>> {
        let stamp = match std::fs::metadata(path) {
            Ok(m) => Stamp {
                modified: m.modified().ok(),
                len: m.len(),
            },
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "admin token file unreadable: refusing /v1 calls");
                *self.cached.borrow_mut() = None;
                return None;
            }
        };
        if let Some((s, token)) = self.cached.borrow().as_ref() {
            if *s == stamp {
                return token.clone();
            }
        }
        let token = match std::fs::read(path) {
            Ok(b) => {
                let t = trim_line_end(&b);
                if t.is_empty() {
                    tracing::warn!(path = %path.display(), "admin token file is empty: refusing /v1 calls");
                    None
                } else {
                    tracing::info!(path = %path.display(), "admin token (re)loaded");
                    Some(t.to_vec())
                }
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "admin token file unreadable: refusing /v1 calls");
                None
            }
        };
        *self.cached.borrow_mut() = Some((stamp, token.clone()));
        token
    }
}

/// The credential of `Bearer <token>` (scheme case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| trim_line_end(rest.trim_ascii()))
}

fn trim_line_end(b: &[u8]) -> &[u8] {
    let mut end = b.len();
    while end > 0 && matches!(b[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &b[..end]
}

/// Equality whose time depends on the lengths only, never on where the
/// first differing byte is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_from_file_is_required_and_follows_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        let t = AdminToken::new(Some(path.clone()));
        assert!(t.admits(Some(b"Bearer s3cret")));
        assert!(t.admits(Some(b"bearer s3cret")));
        assert!(!t.admits(Some(b"Bearer s3cre")));
        assert!(!t.admits(Some(b"Bearer s3cretX")));
        assert!(!t.admits(Some(b"Basic s3cret")));
        assert!(!t.admits(None));
        // Rotation: a different size is noticed at once.
        std::fs::write(&path, "rotated-token").unwrap();
        assert!(!t.admits(Some(b"Bearer s3cret")));
        assert!(t.admits(Some(b"Bearer rotated-token")));
        // Empty or missing file: everything refused.
        std::fs::write(&path, "").unwrap();
        assert!(!t.admits(Some(b"Bearer ")));
        assert!(!t.admits(Some(b"Bearer rotated-token")));
        std::fs::remove_file(&path).unwrap();
        assert!(!t.admits(Some(b"Bearer rotated-token")));
    }

    #[test]
    fn no_token_file_leaves_the_calls_open() {
        let t = AdminToken::new(None);
        assert!(!t.configured());
        assert!(t.admits(None));
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
