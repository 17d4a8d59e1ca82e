//! Secret keys kept in the data directory, and the keyed fingerprints made with them.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// The key of the server's own keyed hashes (an account id derived from an
/// `Idempotency-Key`). Email and IP fingerprints are the vault's tokens instead.
pub const FINGERPRINT_KEY_FILE_NAME: &str = "fingerprint.key";

/// Reads a 32-byte key that must exist.
pub fn read_key(path: &Path) -> std::io::Result<[u8; 32]> {
    std::fs::read(path)?.try_into().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} must hold exactly 32 bytes", path.display()),
        )
    })
}

/// Reads a 32-byte key, or creates it (mode 0600, synced) on first use.
pub fn read_or_create_key(path: &Path) -> std::io::Result<[u8; 32]> {
    match read_key(path) {
        Ok(key) => Ok(key),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let key = random_key();
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                options.mode(0o600);
            }
            let mut file = options.open(path)?;
            file.write_all(&key)?;
            file.sync_all()?;
            Ok(key)
        }
        Err(error) => Err(error),
    }
}

/// 32 bytes from the operating system's random number generator.
pub fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("the OS random number generator works");
    key
}

/// Keyed SHA-256 of strings: equal inputs map to equal outputs, and without the key an
/// output can be neither reversed nor tested against guesses.
#[derive(Clone)]
pub struct Fingerprinter {
    key: [u8; 32],
}

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprinter(<key>)")
    }
}

impl Fingerprinter {
    pub fn new(key: [u8; 32]) -> Fingerprinter {
        Fingerprinter { key }
    }

    /// `kind` separates the fingerprints of different things (`email`, `ip`).
    pub fn fingerprint(&self, kind: &str, value: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.key);
        hasher.update(kind.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        let digest = hasher.finalize();
        let hex: String = ledger::hex::encode(&digest);
        format!("{kind}:{hex}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_keyed_and_separated_by_kind() {
        let one = Fingerprinter::new([1; 32]);
        let two = Fingerprinter::new([2; 32]);
        assert_eq!(
            one.fingerprint("email", "a@b.c"),
            one.fingerprint("email", "a@b.c")
        );
        assert_ne!(
            one.fingerprint("email", "a@b.c"),
            two.fingerprint("email", "a@b.c")
        );
        assert_ne!(one.fingerprint("email", "x"), one.fingerprint("ip", "x"));
        assert!(!one.fingerprint("email", "a@b.c").contains("a@b.c"));
    }

    #[test]
    fn a_key_is_created_private_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FINGERPRINT_KEY_FILE_NAME);
        let key = read_or_create_key(&path).unwrap();
        assert_eq!(read_or_create_key(&path).unwrap(), key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
