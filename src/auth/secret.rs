//! The HS256 secret: from configuration, or created once in the data directory so that
//! `cohort serve` with no configuration is secure and usable at once.

use crate::config::Secret;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The secret file in the data directory.
pub const SECRET_FILE: &str = "hs256.secret";
/// Shortest secret accepted: 256 bits of hex.
const MIN_LEN: usize = 32;

/// Where the secret came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `auth.hs256_secret` (file or `COHORT_AUTH__HS256_SECRET`).
    Configured,
    /// An existing file in the data directory.
    File(PathBuf),
    /// Created just now in the data directory.
    Created(PathBuf),
}

/// A secret that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("auth.hs256_secret is too short: use at least {MIN_LEN} characters (e.g. `openssl rand -hex 32`)")]
    TooShort,
    #[error("cannot read or create the token secret {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the token secret file {0} holds fewer than {MIN_LEN} characters")]
    FileTooShort(PathBuf),
}

/// The configured secret, or the data directory's (created when absent).
pub fn load_or_create(configured: &Secret, data_dir: &Path) -> Result<(Secret, Source), SecretError> {
    if configured.is_set() {
        if configured.expose().trim().len() < MIN_LEN {
            return Err(SecretError::TooShort);
        }
        return Ok((Secret::new(configured.expose().trim()), Source::Configured));
    }
    let path = data_dir.join(SECRET_FILE);
    let io = |source| SecretError::Io { path: path.clone(), source };
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= MIN_LEN => return Ok((Secret::new(text.trim()), Source::File(path))),
        Ok(_) => return Err(SecretError::FileTooShort(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let secret: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(io)?;
    file.write_all(secret.as_bytes()).and_then(|()| file.sync_all()).map_err(io)?;
    Ok((Secret::new(secret), Source::Created(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_created_once_then_reused() {
        let dir = tempfile::tempdir().expect("dir");
        let (first, source) = load_or_create(&Secret::default(), dir.path()).expect("created");
        assert!(matches!(source, Source::Created(_)));
        let (again, source) = load_or_create(&Secret::default(), dir.path()).expect("read");
        assert!(matches!(source, Source::File(_)));
        assert_eq!(first.expose(), again.expose());
        assert!(matches!(load_or_create(&Secret::new("short"), dir.path()), Err(SecretError::TooShort)));
    }
}
